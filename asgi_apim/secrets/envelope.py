"""Placeholder until the secrets issue lands: recognises the envelope prefix only."""

PREFIX = "$aesgcm$v1$"


def is_ciphertext(value: str) -> bool:
    return value.startswith(PREFIX)

"""The ``[encryption]`` keys: parse, generate when absent, hold as a keyring.

``[encryption] key`` (64 hex digits, or ``$env{NAME}``) seals every new value;
``[encryption] old_keys`` may still open values sealed earlier, so nodes of a
cluster can move to a new key one at a time. Every node needs the same key.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomlkit

from asgi_apim._schema import Table, expand_env, read_toml
from asgi_apim.errors import ConfigError, CryptoError
from asgi_apim.secrets._files import atomic_write, locked
from asgi_apim.secrets.envelope import DataKey, Envelope

logger = logging.getLogger("asgi_apim.secrets")

_HEX_KEY = re.compile(r"[0-9a-fA-F]{64}")


@dataclass(frozen=True)
class EncryptionConfig:
    """``[encryption]``: the key that seals, and earlier keys that may still open."""

    key: str | None = field(default=None, repr=False)
    old_keys: tuple[str, ...] = field(default=(), repr=False)


def encryption_config(raw: Mapping[str, Any]) -> EncryptionConfig:
    """``[encryption]`` of a parsed document, ``$env{}`` expanded; the keys themselves are checked by `Keyring`."""
    enc = Table(raw.get("encryption", {}), "encryption", Path())
    key = enc.str("key")
    old_keys = enc.strs("old_keys")
    enc.done()
    return EncryptionConfig(
        key=None if key is None else expand_env(key, "encryption.key"),
        old_keys=tuple(expand_env(k, f"encryption.old_keys[{i}]") for i, k in enumerate(old_keys)),
    )


def generate_key() -> str:
    """A new random 256-bit key as 64 lowercase hex digits."""
    return secrets.token_hex(32)


def parse_key(text: str, where: str = "encryption.key") -> bytes:
    """The 32 bytes of a 64-hex-digit key; `ConfigError` naming ``where`` otherwise (never the value)."""
    text = text.strip() if isinstance(text, str) else ""
    if not _HEX_KEY.fullmatch(text):
        raise ConfigError(where, "must be 64 hexadecimal characters (a 256-bit key); `asgi-apim keygen` makes one")
    return bytes.fromhex(text)


class Keyring:
    """The current key, which seals, and earlier keys, which may still open. Built once."""

    def __init__(self, current: bytes, old: Iterable[bytes] = ()) -> None:
        self.current = DataKey(current)
        self._keys = {self.current.kid: self.current}
        for raw in old:
            key = DataKey(raw)
            self._keys.setdefault(key.kid, key)

    @classmethod
    def from_config(cls, encryption: EncryptionConfig) -> Keyring:
        if encryption.key is None:
            raise ConfigError("encryption.key", "is not set")
        old = [parse_key(k, f"encryption.old_keys[{i}]") for i, k in enumerate(encryption.old_keys)]
        return cls(parse_key(encryption.key), old)

    @property
    def kids(self) -> tuple[str, ...]:
        return tuple(self._keys)

    def __repr__(self) -> str:
        return f"Keyring(current={self.current.kid!r}, kids={list(self._keys)!r})"

    def encrypt(self, plaintext: str, context: bytes = b"") -> str:
        return self.current.encrypt(plaintext, context)

    def decrypt(self, value: str, context: bytes = b"") -> str:
        """Open an envelope with whichever known key sealed it; `CryptoError` otherwise."""
        envelope = Envelope.parse(value)
        key = self._keys.get(envelope.kid)
        if key is None:
            raise CryptoError(
                f"sealed under key id {envelope.kid}, which is neither [encryption] key nor one of old_keys"
            )
        return key.decrypt(envelope, context)


def decryptor_for(encryption: EncryptionConfig) -> Callable[[str, str], str]:
    """``(ciphertext, key path) -> plaintext`` for `asgi_apim.config`, the keyring built once."""
    keyring = Keyring.from_config(encryption)

    def decrypt(value: str, key_path: str) -> str:
        try:
            return keyring.decrypt(value)
        except CryptoError as exc:
            raise ConfigError(key_path, f"does not decrypt: {exc}") from None

    return decrypt


def key_absent(raw: Mapping[str, Any]) -> bool:
    enc = raw.get("encryption")
    return enc is None or (isinstance(enc, dict) and "key" not in enc)


_ALERT = (
    "ALERT: no [encryption] key is configured in %s. A random 256-bit key was generated and written to that file. "
    "Every encrypted value depends on it: back the file up, and give every node of a cluster this same key "
    '(for example through key = "$env{APIM_ENCRYPTION_KEY}"). Losing the key loses the values encrypted under it.'
)


def ensure_key(path: Path) -> dict[str, Any]:
    """Generate ``[encryption] key`` into ``path`` if it has none; return the document as read.

    The file is rewritten atomically with tomlkit, so its comments and layout stay;
    a lock makes workers that start together agree on one key.
    """
    try:
        with locked(path):
            text = path.read_text(encoding="utf-8")
            raw = read_toml(path)
            if not key_absent(raw):
                return raw
            doc = tomlkit.parse(text)
            key = generate_key()
            if "encryption" not in doc:
                doc.add(tomlkit.nl())
                doc.add("encryption", tomlkit.table())
            table = doc["encryption"]
            table.add(tomlkit.comment("AES-256-GCM key generated by asgi-apim: every node needs this same key"))
            table.add("key", key)
            data = tomlkit.dumps(doc).encode("utf-8")
            new = tomllib.loads(data.decode("utf-8"))
            if new.get("encryption", {}).get("key") != key or _without_key(new) != _without_key(raw):
                raise ConfigError(
                    "encryption.key", f"is not set, and it could not be added to {path} safely; set it by hand"
                )
            atomic_write(path, data)
    except OSError as exc:
        raise ConfigError(
            "encryption.key", f"is not set, and a generated key could not be written to {path}: {exc.strerror}"
        ) from None
    logger.warning(_ALERT, path)
    return new


def _without_key(raw: Mapping[str, Any]) -> dict[str, Any]:
    doc = dict(raw)
    enc = dict(doc.pop("encryption", {}) or {})
    enc.pop("key", None)
    if enc:
        doc["encryption"] = enc
    return doc


def load_keyring(path: str | os.PathLike[str], *, read_only: bool = False) -> Keyring:
    """The keyring of a configuration file, reading only its ``[encryption]`` table.

    A file without a key gets one generated into it, unless ``read_only`` (``decrypt``):
    then nothing is written and the absent key is a `ConfigError`.
    """
    path = Path(path).resolve()
    raw = read_toml(path)
    if key_absent(raw) and read_only:
        raise ConfigError("encryption.key", f"is not set in {path}: nothing can have been encrypted under it")
    if key_absent(raw):
        raw = ensure_key(path)
    return Keyring.from_config(encryption_config(raw))

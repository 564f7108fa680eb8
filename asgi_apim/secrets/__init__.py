"""AES-256-GCM secrets under one shared key (``[encryption] key``).

Values are decrypted once, when the configuration loads; nothing here runs per
request. The envelope format is specified in ``docs/secrets.md``. The
application reads the decrypted ``[secrets]`` table with `asgi_apim.load_secrets`.
"""

from asgi_apim.secrets.envelope import DataKey, Envelope, is_ciphertext, key_id
from asgi_apim.secrets.keys import (
    EncryptionConfig,
    Keyring,
    decryptor_for,
    encryption_config,
    generate_key,
    load_keyring,
    parse_key,
)

__all__ = [
    "DataKey",
    "EncryptionConfig",
    "Envelope",
    "Keyring",
    "decryptor_for",
    "encryption_config",
    "generate_key",
    "is_ciphertext",
    "key_id",
    "load_keyring",
    "parse_key",
]

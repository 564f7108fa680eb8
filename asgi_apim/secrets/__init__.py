"""AES-256-GCM secrets under one shared key (``[encryption] key``).

Values are decrypted once, when the configuration loads; nothing here runs per
request. The envelope format is specified in ``docs/secrets.md``.
"""

from asgi_apim.secrets.envelope import DataKey, Envelope, is_ciphertext, key_id
from asgi_apim.secrets.keys import Keyring, decryptor_for, generate_key, load_keyring, load_secrets, parse_key

__all__ = [
    "DataKey",
    "Envelope",
    "Keyring",
    "decryptor_for",
    "generate_key",
    "is_ciphertext",
    "key_id",
    "load_keyring",
    "load_secrets",
    "parse_key",
]

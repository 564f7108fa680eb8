"""AES-256-GCM secrets under one shared key (``[encryption] key``)."""

from asgi_apim.secrets.envelope import is_ciphertext
from asgi_apim.secrets.keys import decryptor_for

__all__ = ["decryptor_for", "is_ciphertext"]

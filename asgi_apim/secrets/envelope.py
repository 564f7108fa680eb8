"""The AES-256-GCM primitive and the text envelope it travels in.

An encrypted value is one ASCII line, safe in a TOML basic or literal string,
an environment variable, a shell argument and YAML::

    aesgcm:v1:<kid>:<nonce>:<sealed>

``kid``
    16 lowercase hex digits: the first 8 bytes of
    HMAC-SHA256(key, "asgi-apim key id"). It tells which key sealed the value
    and reveals nothing about the key.
``nonce``
    the 12-byte (96-bit) random nonce, base64url without padding (16 chars).
``sealed``
    AES-256-GCM ciphertext followed by its 16-byte tag, base64url without padding.

The associated data is the ASCII header ``aesgcm:v1:<kid>:`` followed by an
optional context chosen by the owner of the value (empty for configuration
values), so the version and the key id cannot be swapped, and a value can be
bound to its purpose. The full specification is in ``docs/secrets.md``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
from typing import NamedTuple

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from asgi_apim._schema import CIPHERTEXT_PREFIX
from asgi_apim.errors import CryptoError

PREFIX = CIPHERTEXT_PREFIX
KEY_SIZE = 32
NONCE_SIZE = 12
TAG_SIZE = 16
KID_LABEL = b"asgi-apim key id"

_B64 = r"[A-Za-z0-9_-]"
_ENVELOPE = re.compile(rf"aesgcm:v1:([0-9a-f]{{16}}):({_B64}{{16}}):({_B64}{{22,}})")


def is_ciphertext(value: str) -> bool:
    """Whether ``value`` claims to be an envelope (it must then decrypt, or be refused)."""
    return value.startswith(PREFIX)


def key_id(key: bytes) -> str:
    """The public identifier of ``key``: 8 bytes of HMAC-SHA256(key, label), in hex."""
    return hmac.digest(key, KID_LABEL, hashlib.sha256)[:8].hex()


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if _b64encode(data) != text:  # unused low bits set: not the one canonical spelling
        raise ValueError("non-canonical base64")
    return data


class Envelope(NamedTuple):
    kid: str
    nonce: bytes
    sealed: bytes

    @classmethod
    def parse(cls, text: str) -> Envelope:
        """Split an envelope into its parts; `CryptoError` if it is not one, exactly."""
        match = _ENVELOPE.fullmatch(text)
        if match is None:
            raise CryptoError("not a well-formed aesgcm:v1 envelope")
        try:
            nonce, sealed = _b64decode(match.group(2)), _b64decode(match.group(3))
        except ValueError:
            raise CryptoError("not a well-formed aesgcm:v1 envelope") from None
        if len(sealed) < TAG_SIZE:
            raise CryptoError("not a well-formed aesgcm:v1 envelope")
        return cls(match.group(1), nonce, sealed)

    @staticmethod
    def header(kid: str) -> str:
        return f"{PREFIX}{kid}:"

    def aad(self, context: bytes = b"") -> bytes:
        return self.header(self.kid).encode("ascii") + context

    def __str__(self) -> str:
        return f"{self.header(self.kid)}{_b64encode(self.nonce)}:{_b64encode(self.sealed)}"


class DataKey:
    """One AES-256 key, its id and its `AESGCM` object, built once."""

    __slots__ = ("_aead", "kid")

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_SIZE:
            raise CryptoError("an AES-256 key is 32 bytes")
        self._aead = AESGCM(key)
        self.kid = key_id(key)

    def __repr__(self) -> str:
        return f"DataKey(kid={self.kid!r})"

    def seal(self, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
        """Low-level AES-256-GCM with an explicit 96-bit nonce: ciphertext || tag."""
        if len(nonce) != NONCE_SIZE:
            raise CryptoError("the nonce must be 96 bits")
        return self._aead.encrypt(nonce, plaintext, aad)

    def open(self, nonce: bytes, sealed: bytes, aad: bytes) -> bytes:
        """Inverse of `seal`; `CryptoError` if the tag does not verify."""
        if len(nonce) != NONCE_SIZE or len(sealed) < TAG_SIZE:
            raise CryptoError("not an AES-256-GCM ciphertext with a 96-bit nonce")
        try:
            return self._aead.decrypt(nonce, sealed, aad)
        except InvalidTag:
            raise CryptoError("authentication failed: wrong key or tampered value") from None

    def encrypt(self, plaintext: str, context: bytes = b"") -> str:
        """Seal ``plaintext`` under a fresh random nonce into an envelope."""
        nonce = os.urandom(NONCE_SIZE)
        aad = (Envelope.header(self.kid)).encode("ascii") + context
        return str(Envelope(self.kid, nonce, self.seal(nonce, plaintext.encode("utf-8"), aad)))

    def decrypt(self, envelope: Envelope, context: bytes = b"") -> str:
        if envelope.kid != self.kid:
            raise CryptoError(f"sealed under key id {envelope.kid}, not {self.kid}")
        data = self.open(envelope.nonce, envelope.sealed, envelope.aad(context))
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise CryptoError("the plaintext is not UTF-8") from None

"""HTTP basic authentication against an Apache htpasswd file of bcrypt entries.

Only bcrypt (``$2y$``, ``$2b$``, ``$2a$``, as written by ``htpasswd -B``) is
accepted: any other hash kind (MD5 ``$apr1$``, SHA1 ``{SHA}``, crypt, plain)
is refused when the file is loaded, with the line number. The file is checked
for changes at most once per ``check_interval`` and reloaded off the event
loop; a reload that fails keeps the last good users (and is logged).

``bcrypt.checkpw`` runs in a worker thread. An unknown user is checked against
a dummy hash of the file's usual cost, so both answers take as long. A
successful check is remembered for ``cache_ttl`` seconds under a keyed BLAKE2b
digest of (user, password, stored hash), never the password itself, so a hot
client does not pay bcrypt's cost on every request; changing a user's entry
in the file invalidates it.
"""

from __future__ import annotations

import binascii
import hashlib
import logging
import os
import secrets
from collections import Counter
from pathlib import Path

import anyio.to_thread
import bcrypt
from starlette.types import Scope

from asgi_apim.auth.base import ExpiringCache, authorization, invalid, now, without_header
from asgi_apim.config import ApiConfig, Config
from asgi_apim.errors import ConfigError
from asgi_apim.identity import Principal

logger = logging.getLogger("asgi_apim.auth.basic")

BCRYPT_PREFIXES = (b"$2y$", b"$2b$", b"$2a$")
MAX_CREDENTIAL_BYTES = 4096
_FileId = tuple[int, int, int]


class HtpasswdError(ValueError):
    """An htpasswd file that cannot be used; the message names the line, never a hash."""


def parse_htpasswd(text: str, source: str = "htpasswd") -> dict[str, bytes]:
    """``{user: bcrypt hash}`` from htpasswd text. Raises `HtpasswdError`."""
    users: dict[str, bytes] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        user, sep, hashed = line.partition(":")
        if not sep or not user:
            raise HtpasswdError(f"{source} line {number}: expected user:hash")
        entry = hashed.encode()
        if not entry.startswith(BCRYPT_PREFIXES) or len(entry) != 60 or not entry[4:6].isdigit() or entry[6:7] != b"$":
            raise HtpasswdError(
                f"{source} line {number}: user {user!r} does not have a bcrypt hash;"
                " only $2y$/$2b$/$2a$ entries are accepted (htpasswd -B)"
            )
        users[user] = entry
    return users


def _cost(users: dict[str, bytes]) -> int:
    costs = Counter(int(h[4:6]) for h in users.values())
    return costs.most_common(1)[0][0] if costs else 12


def _dummy_hash(cost: int) -> bytes:
    return bcrypt.hashpw(secrets.token_bytes(16), bcrypt.gensalt(rounds=cost))


class BasicAuthenticator:
    """``Authorization: Basic`` against an htpasswd file."""

    scheme = "basic"
    header: bytes | None = b"authorization"
    query_param: str | None = None

    def __init__(
        self,
        users_file: Path,
        *,
        realm: str = "asgi-apim",
        tier: str = "Unlimited",
        cache_ttl: float = 60.0,
        cache_size: int = 1024,
        check_interval: float = 1.0,
    ) -> None:
        self.path = Path(users_file)
        self.tier = tier
        self.challenge = f'Basic realm="{realm}", charset="UTF-8"'
        self.cache_ttl = cache_ttl
        self.check_interval = check_interval
        try:
            self._file_id, users = self._read()
        except (OSError, ValueError) as exc:
            raise ConfigError("basic_auth.users_file", str(exc)) from None
        self._users = users
        self._dummy_cost = _cost(users)
        self._dummy = _dummy_hash(self._dummy_cost)
        self._checked = now()
        self._reloading = False
        self._digest_key = secrets.token_bytes(32)
        self._cache: ExpiringCache[bytes, bool] = ExpiringCache(cache_size)

    @classmethod
    def from_config(cls, config: Config) -> BasicAuthenticator:
        ba = config.basic_auth
        if ba.users_file is None:
            raise ConfigError(
                "basic_auth.users_file", "an API lists basic but no [basic_auth] users_file is configured"
            )
        return cls(ba.users_file, realm=ba.realm, tier=ba.tier)

    def _stat(self) -> _FileId:
        st = os.stat(self.path)
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _read(self) -> tuple[_FileId, dict[str, bytes]]:
        file_id = self._stat()
        return file_id, parse_htpasswd(self.path.read_text(encoding="utf-8"), str(self.path))

    def _reload_if_changed(self) -> tuple[_FileId, dict[str, bytes], bytes | None] | None:
        if self._stat() == self._file_id:
            return None
        file_id, users = self._read()
        cost = _cost(users)
        return file_id, users, (_dummy_hash(cost) if cost != self._dummy_cost else None)

    async def _maybe_reload(self, t: float) -> None:
        self._checked = t
        if self._reloading:
            return
        self._reloading = True
        try:
            changed = await anyio.to_thread.run_sync(self._reload_if_changed)
        except (OSError, ValueError) as exc:
            logger.error("cannot reload %s, keeping %d user(s): %s", self.path, len(self._users), exc)
            return
        finally:
            self._reloading = False
        if changed is not None:
            self._file_id, self._users, dummy = changed
            if dummy is not None:
                self._dummy, self._dummy_cost = dummy, _cost(self._users)
            self._cache.clear()
            logger.info("reloaded %s: %d user(s)", self.path, len(self._users))

    def credential(self, scope: Scope) -> str | None:
        return authorization(scope, "basic")

    def _decode(self, credential: str) -> tuple[str, bytes]:
        if len(credential) > MAX_CREDENTIAL_BYTES:
            raise invalid("basic credentials are too long", self.challenge)
        try:
            user, sep, password = binascii.a2b_base64(credential, strict_mode=True).decode("utf-8").partition(":")
        except (binascii.Error, ValueError):
            raise invalid("basic credentials are not base64 user:password", self.challenge) from None
        if not sep or not user:
            raise invalid("basic credentials are not base64 user:password", self.challenge)
        return user, password.encode("utf-8")

    def strip(self, scope: Scope) -> None:
        without_header(scope, b"authorization")

    async def authenticate(self, credential: str, api: ApiConfig, scope: Scope) -> Principal:
        t = now()
        if t - self._checked >= self.check_interval:
            await self._maybe_reload(t)
        user, password = self._decode(credential)
        entry = self._users.get(user)
        digest = None
        if entry is not None:
            digest = hashlib.blake2b(b"\0".join((user.encode(), password, entry)), key=self._digest_key).digest()
            if self._cache.get(digest, t):
                return self._principal(user, api)
        try:
            ok = await anyio.to_thread.run_sync(bcrypt.checkpw, password[:72], entry or self._dummy)
        except ValueError:
            ok = False
        if entry is None or not ok:
            raise invalid("invalid user name or password", self.challenge)
        assert digest is not None
        self._cache.put(digest, True, t + self.cache_ttl, t)
        return self._principal(user, api)

    def _principal(self, user: str, api: ApiConfig) -> Principal:
        return Principal(
            method="basic",
            subject=user,
            api=api.name,
            tier=self.tier,
            methods=("basic",),
            throttle_key=f"user:{user}",
            version=api.version,
        )

    async def start(self) -> None:
        return None

    async def aclose(self) -> None:
        return None

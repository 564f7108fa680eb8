"""WSO2's backend JWT: the authenticated caller, signed for the backend (``[apis.backend_jwt]``).

Each request of an authenticated caller carries ``X-JWT-Assertion`` (or the configured
header): a JWT signed with ``signing_key`` (RS256, ES256 or EdDSA, chosen by the key), with
WSO2's claims::

    iss, sub, iat, exp (iat + validity), jti
    http://wso2.org/claims/apiname, .../apicontext, .../enduser, .../tier, .../keytype,
    http://wso2.org/claims/authmethod (mutual_ssl, oauth2, api_key, basic), .../certalias, scope

The backend verifies it with the public key. A token is made once per caller and reused
until half of its validity has passed. A public resource's anonymous caller gets none.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import jwt
from cryptography.hazmat.primitives.serialization import load_der_private_key, load_pem_private_key

from asgi_apim.auth.apikey import algorithm_for
from asgi_apim.errors import ConfigError
from asgi_apim.gateway_config import BackendJWTConfig

CLAIMS = "http://wso2.org/claims/"
_CACHE_SIZE = 4096


def load_key(cfg: BackendJWTConfig, key: str) -> Any:
    try:
        data = cfg.signing_key.read_bytes()
    except OSError as exc:
        raise ConfigError(key, f"cannot read {cfg.signing_key}: {exc.strerror or exc}") from None
    try:
        private = load_pem_private_key(data, None) if b"-----BEGIN" in data else load_der_private_key(data, None)
        algorithm_for(private)
    except (ValueError, TypeError) as exc:
        raise ConfigError(key, f"{cfg.signing_key} is not a usable private key: {exc}") from None
    return private


class BackendJWT:
    def __init__(
        self,
        cfg: BackendJWTConfig,
        api: str,
        context: str,
        *,
        key: str,
        clock: Callable[[], float] = time.time,
        version: str | None = None,
    ) -> None:
        self.header = cfg.header.encode("latin-1")
        self._cfg = cfg
        self._key = load_key(cfg, key)
        self._algorithm = algorithm_for(self._key)
        self._api = api
        self._context = context
        self._version = version
        self._clock = clock
        self._cache: dict[tuple[Any, ...], tuple[bytes, float]] = {}

    def token(self, user: Any) -> bytes | None:
        """The header value for ``user`` (a `Principal`), or None for an anonymous caller."""
        if not getattr(user, "is_authenticated", False):
            return None
        key = (user.method, user.subject, user.tier, user.alias, tuple(user.scopes), user.key_type)
        now = self._clock()
        cached = self._cache.get(key)
        if cached is not None and now < cached[1]:
            return cached[0]
        iat = int(now)
        claims = {
            "iss": self._cfg.issuer,
            "sub": user.subject,
            "iat": iat,
            "exp": iat + int(self._cfg.validity),
            "jti": uuid.uuid4().hex,
            CLAIMS + "apiname": self._api,
            CLAIMS + "apicontext": self._context,
            CLAIMS + "enduser": user.subject,
            CLAIMS + "tier": user.tier,
            CLAIMS + "keytype": user.key_type,
            CLAIMS + "authmethod": user.method,
        }
        if self._version is not None:
            claims[CLAIMS + "version"] = self._version
        if user.alias:
            claims[CLAIMS + "certalias"] = user.alias
        if user.scopes:
            claims["scope"] = " ".join(user.scopes)
        token = jwt.encode(claims, self._key, algorithm=self._algorithm, headers={"typ": "JWT"}).encode("ascii")
        if len(self._cache) >= _CACHE_SIZE:
            self._cache.clear()
        self._cache[key] = (token, now + self._cfg.validity / 2)
        return token

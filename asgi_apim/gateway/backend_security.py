"""The credential the gateway presents to a backend (``[apis.backend_security]``).

=========  ==========================================================================
type       what the backend receives
=========  ==========================================================================
basic      ``Authorization: Basic`` of ``username`` and the (encrypted) ``password``
bearer     ``Authorization: Bearer`` of a fixed (encrypted) ``token``
api_key    the (encrypted) ``value`` as header ``name`` (``in = "header"``) or query
           parameter ``name`` (``in = "query"``)
oauth2     ``Authorization: Bearer`` of a token obtained with OAuth 2.0 client credentials
           (RFC 6749 4.4) from ``token_url``, ``client_id`` / ``client_secret`` sent as HTTP
           Basic (2.3.1), ``scopes`` space-joined; cached until shortly before it expires,
           fetched once for every request waiting on it, fetched anew (once) when the backend
           answers 401
=========  ==========================================================================

A token endpoint that fails (unreachable, not 200, not a token) fails the request
with 502 101503; the reason is logged, never the secret or the token.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import httpx

from asgi_apim.errors import BackendError
from asgi_apim.gateway_config import BackendSecurityConfig

logger = logging.getLogger("asgi_apim.gateway")

MAX_TOKEN_RESPONSE = 64 * 1024
Headers = list[tuple[bytes, bytes]]


class BackendAuth:
    """A fixed credential (basic, bearer, api_key): the base of every backend credential."""

    retry_on_401 = False

    def __init__(self, header: tuple[bytes, bytes] | None = None, query: tuple[bytes, bytes] | None = None) -> None:
        self._header = header
        self._query = query
        # the names the client's own value must not reach the backend under (it would be ours, or mixed with ours)
        self.header_name = header[0] if header else None
        self.query_name = query[0].decode() if query else None

    async def apply(self, headers: Headers, query: bytes) -> tuple[str | None, bytes]:
        """Add the credential to ``headers`` (in place); the credential used (for `rejected`) and the query."""
        if self._header is not None:
            headers.append(self._header)
        if self._query is not None:
            name, value = self._query
            query = query + b"&" + name + b"=" + value if query else name + b"=" + value
        return None, query

    def rejected(self, used: str | None) -> None:
        """The backend answered 401 to ``used``."""
        return None

    async def aclose(self) -> None:
        return None


class OAuth2ClientCredentials(BackendAuth):
    retry_on_401 = True

    def __init__(
        self,
        cfg: BackendSecurityConfig,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.header_name = b"authorization"
        self._cfg = cfg
        self._transport = transport
        self._clock = clock
        self._client: httpx.AsyncClient | None = None
        self._token: str | None = None
        self._refresh_at = 0.0
        self._inflight: asyncio.Future[str] | None = None
        self.fetches = 0

    async def apply(self, headers: Headers, query: bytes) -> tuple[str | None, bytes]:
        token = await self.token()
        headers.append((b"authorization", b"Bearer " + token.encode("latin-1")))
        return token, query

    def rejected(self, used: str | None) -> None:
        if used is not None and used == self._token:
            self._token = None

    async def token(self) -> str:
        if self._token is not None and self._clock() < self._refresh_at:
            return self._token
        if self._inflight is None:
            self._inflight = asyncio.ensure_future(self._fetch())
            self._inflight.add_done_callback(self._done)
        return await asyncio.shield(self._inflight)

    def _done(self, future: asyncio.Future[str]) -> None:
        self._inflight = None
        if not future.cancelled():
            future.exception()  # retrieved: the waiters have had it

    async def _fetch(self) -> str:
        cfg = self._cfg
        if self._client is None:
            self._client = httpx.AsyncClient(transport=self._transport, follow_redirects=False, trust_env=False)
        data = {"grant_type": "client_credentials"}
        if cfg.scopes:
            data["scope"] = " ".join(cfg.scopes)
        self.fetches += 1
        try:
            async with asyncio.timeout(cfg.token_timeout):
                async with self._client.stream(
                    "POST",
                    cfg.token_url or "",
                    data=data,
                    auth=(quote(cfg.client_id or "", safe=""), quote(cfg.client_secret or "", safe="")),
                    headers={"accept": "application/json"},
                ) as response:
                    body = bytearray()
                    async for chunk in response.aiter_bytes():
                        body += chunk
                        if len(body) > MAX_TOKEN_RESPONSE:
                            raise ValueError(f"the answer is longer than {MAX_TOKEN_RESPONSE} bytes")
                    status = response.status_code
        except (httpx.HTTPError, TimeoutError, ValueError, OSError) as exc:
            logger.error("backend token endpoint %s: %s", cfg.token_url, type(exc).__name__ + _reason(exc))
            raise BackendError("the gateway could not obtain its credential for the backend") from None
        token, expires_in = _token_of(status, bytes(body), cfg.token_url or "")
        now = self._clock()
        self._token = token
        self._refresh_at = now + max(0.0, expires_in - min(60.0, expires_in / 10))
        return token

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


def _reason(exc: BaseException) -> str:
    return f" ({exc})" if isinstance(exc, ValueError) else ""


def _token_of(status: int, body: bytes, url: str) -> tuple[str, float]:
    """The access token and its lifetime from a token endpoint's answer (RFC 6749 5.1)."""
    doc: Any = None
    if status == 200:
        try:
            doc = json.loads(body)
        except ValueError:
            doc = None
    token = doc.get("access_token") if isinstance(doc, dict) else None
    kind = doc.get("token_type", "bearer") if isinstance(doc, dict) else None
    if not isinstance(token, str) or not token or not isinstance(kind, str) or kind.lower() != "bearer":
        logger.error("backend token endpoint %s answered %d without a bearer access_token", url, status)
        raise BackendError("the gateway could not obtain its credential for the backend")
    if not all(0x20 < ord(c) < 0x7F for c in token):
        logger.error("backend token endpoint %s answered a token an HTTP header cannot carry", url)
        raise BackendError("the gateway could not obtain its credential for the backend")
    expires_in = doc.get("expires_in", 3600)
    if isinstance(expires_in, str) and expires_in.isdigit():
        expires_in = int(expires_in)
    if isinstance(expires_in, bool) or not isinstance(expires_in, (int, float)) or expires_in <= 0:
        expires_in = 60.0
    return token, float(expires_in)


def backend_auth(cfg: BackendSecurityConfig) -> BackendAuth:
    """The credential object of one API's ``[apis.backend_security]``."""
    if cfg.type == "oauth2":
        return OAuth2ClientCredentials(cfg)
    if cfg.type == "basic":
        pair = f"{cfg.username}:{cfg.password}".encode()
        return BackendAuth(header=(b"authorization", b"Basic " + base64.b64encode(pair)))
    if cfg.type == "bearer":
        return BackendAuth(header=(b"authorization", b"Bearer " + (cfg.token or "").encode("latin-1")))
    name, value = cfg.name or "", cfg.value or ""
    if cfg.location == "header":
        return BackendAuth(header=(name.lower().encode("latin-1"), value.encode("latin-1")))
    return BackendAuth(query=(quote(name, safe="").encode(), quote(value, safe="").encode()))

"""The exceptions asgi-apim raises, and how each one is answered over HTTP.

Every error a caller can catch has a place in this tree::

    APIMError
    ├── ConfigError ........................ start-up only: a bad key or value
    │   └── AlreadyProtected ............... protect() of an app that is already protected
    ├── CryptoError ........................ a value that does not decrypt, a bad key
    ├── TruststoreError .................... a truststore, CRL or registered certificate file that cannot be used
    ├── RegistryError ...................... the certificate registry refused a change (admin API: 409)
    │   ├── RegistryUsageError ............. an unknown API or tier (CLI: exit 2; admin API: 400)
    │   ├── RegistryNotFound ............... no such registration (admin API: 404)
    │   ├── CertificateFileError ........... not one certificate, or holds a private key (admin API: 400)
    │   └── RegistryUnavailable ............ the database cannot be reached or read (admin API: 503)
    └── RequestError ....................... answered as application/problem+json
        ├── BadRequest ..................... 400  900900
        │   └── CertificateHeaderError ..... 400  900900  malformed certificate header
        ├── AuthenticationError ............ 401
        │   ├── MissingCredentials ......... 401  900902
        │   └── InvalidCredentials ......... 401  900901
        │       └── CertificateRejected .... 401  900901  a certificate that does not pass
        ├── Forbidden ...................... 403  900908
        │   ├── ScopeMismatch .............. 403  900910
        │   └── TransportRefused ........... 403  900906  plain HTTP on an API served over HTTPS only
        ├── NotFound ....................... 404  900906  no API owns the path
        ├── Throttled ...................... 429  900800-series, with Retry-After
        ├── StorageUnavailable ............. 503  900899  throttling storage away (fail closed; no WSO2 code)
        ├── InterceptorFailed .............. 500  101500  a request or response interceptor raised (no WSO2 code)
        └── BackendError ................... 502  101503  gateway mode: connecting to the backend failed
            ├── BackendConnectTimeout ...... 504  101508  no connection within the connect timeout
            ├── BackendTimeout ............. 504  101504  no answer within the read (or total) timeout
            ├── BackendConnectionClosed .... 502  101505  the backend closed or reset the connection
            ├── BackendProtocolError ....... 502  101506  the backend's answer is not HTTP
            └── EndpointsSuspended ......... 503  303001  every endpoint of the backend is suspended

    UsageError ............................. the ``asgi-apim`` command used wrongly: exit code 2 (not an APIMError)

`problem_response` renders any `RequestError` as an RFC 9457 problem document with
WSO2's numeric ``code``. Details say why a request failed; they never carry a
credential, a certificate body or a secret.
"""

from __future__ import annotations

import copy
import json
import re
from typing import ClassVar

from starlette.types import Scope, Send

from asgi_apim._access import refused

# Every value decrypted from the configuration last loaded (`asgi_apim._schema.resolve_document`
# starts the set again for each), so that no error's text shows it: a bad value that came
# encrypted is named by its key alone. A value shorter than four characters is no secret worth
# the name, and would garble every message.
_DECRYPTED: set[str] = set()
_pattern: re.Pattern[str] | None = None
CONCEALED = "<decrypted value>"


def decrypted(value: str) -> str:
    """Record ``value`` as a decrypted configuration value (never to appear in an error); answer it."""
    global _pattern
    if len(value) >= 4 and value not in _DECRYPTED:
        _DECRYPTED.add(value)
        _pattern = re.compile("|".join(re.escape(v) for v in sorted(_DECRYPTED, key=len, reverse=True)))
    return value


def forget_decrypted() -> None:
    """Start the set of decrypted values again: a configuration is being loaded."""
    global _pattern
    _DECRYPTED.clear()
    _pattern = None


def concealed(text: str) -> str:
    """``text`` with every decrypted configuration value in it replaced by `CONCEALED`, in one pass."""
    return text if _pattern is None else _pattern.sub(CONCEALED, text)


class UsageError(Exception):
    """Bad usage of the ``asgi-apim`` command discovered after parsing: exit code 2."""


class APIMError(Exception):
    """Base of every error raised by asgi-apim. Its text never shows a decrypted configuration value."""

    def __str__(self) -> str:
        return concealed(super().__str__())


class ConfigError(APIMError):
    """The configuration cannot be used. The message names the key."""

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        super().__init__(f"{key}: {message}" if key else message)


class AlreadyProtected(ConfigError):
    """`protect()` (or ``asgi-apim serve``) given an app that already has the stack around it:
    every limit would be charged twice and every RateLimit header sent twice."""

    def __init__(self) -> None:
        super().__init__(
            "",
            "the app is already protect()ed: give protect() or `asgi-apim serve` the unprotected app"
            " (serve protects MODULE:APP itself), or run the protected app with"
            " `uvicorn APP --http asgi_apim.server.protocols:HTTPProtocol` (docs/servers.md)",
        )


class CryptoError(APIMError):
    """A ciphertext that does not decrypt under the configured keys, or a bad key."""


class TruststoreError(APIMError):
    """A truststore, CRL or registered certificate file cannot be loaded. The
    message names the file, never a password. Fatal at start-up; on a reload the
    last good truststore keeps serving."""


class RegistryError(APIMError):
    """A registry change refused: a duplicate alias or certificate (and the base of the registry's errors)."""


class RegistryUsageError(RegistryError):
    """An API or tier the configuration does not know."""


class RegistryNotFound(RegistryError):
    """No registration of that alias for that API."""


class CertificateFileError(RegistryError):
    """What was given to register is not one certificate, or holds a private key."""


class RegistryUnavailable(RegistryError):
    """The registry's database cannot be reached, or answered with an error. The text never holds its URL."""


class RequestError(APIMError):
    status: ClassVar[int] = 400
    code: ClassVar[int] = 900900
    title: ClassVar[str] = "Bad Request"

    def __init__(self, detail: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers or {}

    def again(self) -> RequestError:
        """A new error equal to this one, to raise. An error kept for later (a cached refusal)
        is a value and never raised itself: every raise adds the raiser's frames to an
        exception's traceback, and those frames hold the request that raised it."""
        new = copy.copy(self)
        new.headers = dict(self.headers)
        return new


class BadRequest(RequestError):
    pass


class CertificateHeaderError(BadRequest):
    title = "Malformed Client Certificate"


class AuthenticationError(RequestError):
    status = 401
    code = 900901
    title = "Invalid Credentials"


class MissingCredentials(AuthenticationError):
    code = 900902
    title = "Missing Credentials"


class InvalidCredentials(AuthenticationError):
    pass


class CertificateRejected(InvalidCredentials):
    title = "Invalid Client Certificate"


class Forbidden(RequestError):
    status = 403
    code = 900908
    title = "Forbidden"


class ScopeMismatch(Forbidden):
    code = 900910
    title = "The access token does not allow you to access the requested resource"


class TransportRefused(Forbidden):
    code = 900906  # WSO2: the API is not published on this transport, so no resource matches
    title = "Forbidden"


class InterceptorFailed(RequestError):
    status = 500
    code = 101500  # WSO2 has no code for a failing interceptor
    title = "Internal Server Error"


class NotFound(RequestError):
    status = 404
    code = 900906
    title = "No matching resource found for given API Request"


class Throttled(RequestError):
    status = 429
    code = 900800
    title = "Message throttled out"

    def __init__(self, detail: str, *, code: int = 900800, retry_after: int = 1) -> None:
        super().__init__(detail, headers={"retry-after": str(max(1, retry_after))})
        self.code = code  # type: ignore[misc]  # this refusal's WSO2 code over the class's
        self.retry_after = retry_after


class StorageUnavailable(RequestError):
    status = 503
    code = 900899  # WSO2 has no code for this; 900807 is its burst limit
    title = "Throttling Unavailable"


class BackendError(RequestError):
    """A transport failure towards a backend (gateway mode). The detail names no backend
    address: the gateway logs it, the caller only learns what kind of failure it was."""

    status = 502
    code = 101503
    title = "Backend Unavailable"


class BackendConnectTimeout(BackendError):
    status = 504
    code = 101508
    title = "Backend Connect Timeout"


class BackendTimeout(BackendError):
    status = 504
    code = 101504
    title = "Backend Timeout"


class BackendConnectionClosed(BackendError):
    code = 101505
    title = "Backend Connection Closed"


class BackendProtocolError(BackendError):
    code = 101506
    title = "Backend Protocol Violation"


class EndpointsSuspended(BackendError):
    status = 503
    code = 303001
    title = "Endpoints Suspended"


def problem_body(exc: RequestError, instance: str = "") -> bytes:
    doc = {
        "type": "about:blank",
        "title": exc.title,
        "status": exc.status,
        "detail": exc.detail,
        "code": exc.code,
    }
    if instance:
        doc["instance"] = instance
    return json.dumps(doc, separators=(",", ":")).encode()


async def send_problem(send: Send, exc: RequestError, instance: str = "") -> None:
    """Answer with ``exc`` as application/problem+json, straight onto ``send``."""
    body = problem_body(exc, instance)
    headers = [
        (b"content-type", b"application/problem+json"),
        (b"content-length", str(len(body)).encode()),
    ]
    headers.extend((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in exc.headers.items())
    await send({"type": "http.response.start", "status": exc.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def reject(scope: Scope, send: Send, exc: RequestError, api: str | None = None) -> None:
    """Reject an HTTP request or a WebSocket handshake with ``exc`` (a request on ``api``, if known):
    every refusal passes here once, and is counted and logged (`asgi_apim._access`)."""
    refused(scope, exc.status, exc.code, exc.detail, api)
    if scope["type"] == "websocket":
        if "websocket.http.response" in scope.get("extensions", {}):
            body = problem_body(exc, scope.get("path", ""))
            headers = [(b"content-type", b"application/problem+json")]
            headers.extend((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in exc.headers.items())
            await send({"type": "websocket.http.response.start", "status": exc.status, "headers": headers})
            await send({"type": "websocket.http.response.body", "body": body})
        else:
            await send({"type": "websocket.close", "code": 1008, "reason": exc.title[:120]})
        return
    await send_problem(send, exc, scope.get("path", ""))

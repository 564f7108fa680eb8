"""What every application-security scheme offers the policy, and how they are built.

An `Authenticator` knows one scheme (``oauth2``, ``api_key``, ``basic``): where
its credential lives in a request (`credential`, synchronous and cheap) and
whether that credential is good for an API (`authenticate`, which returns a
`Principal` or raises `InvalidCredentials`). `build_authenticators` builds one
per scheme that some API lists, from the configuration, once.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar, runtime_checkable
from urllib.parse import unquote_plus

from starlette.types import Scope

from asgi_apim.auth.subscriptions import Subscriptions, tiers_for
from asgi_apim.config import ApiConfig, Config, SecurityConfig
from asgi_apim.errors import InvalidCredentials
from asgi_apim.identity import Principal

MAX_TOKEN_BYTES = 16 * 1024
ALIAS_TAIL = 24  # the last bytes of a raw header value, which `ExpiringCache.alias` files it under
TAIL = slice(-ALIAS_TAIL, None)  # value[TAIL]: made once, not a slice object per request
DEFAULT_REALM = "asgi-apim"

K = TypeVar("K")
V = TypeVar("V")


@runtime_checkable
class Authenticator(Protocol):
    scheme: str
    challenge: str
    header: bytes | None  # the header its credential is read from (lower-case), if any: sent once at most
    query_param: str | None  # the query parameter its credential may be read from, if any

    def credential(self, scope: Scope) -> str | None: ...

    async def authenticate(self, credential: str, api: ApiConfig, scope: Scope) -> Principal: ...

    def strip(self, scope: Scope) -> None:
        """Remove this scheme's credential from the request, before the app sees it."""
        ...

    async def start(self) -> None: ...

    async def aclose(self) -> None: ...


class RecallSupport(ABC):
    """Capability of an authenticator that keeps the credentials it validated: a request
    bearing one again is answered without awaiting (`ApplicationSecurity.recall`)."""

    header: bytes | None
    scheme: str

    @abstractmethod
    def credential(self, scope: Scope) -> str | None:
        """The request's credential for this scheme, or None."""

    @abstractmethod
    def recall(self, credential: str, api: ApiConfig) -> Principal | None:
        """The caller of ``credential`` if it was validated before and still holds for ``api``."""

    @abstractmethod
    def recall_raw(self, raw: bytes, api: ApiConfig) -> Principal | None:
        """`recall` by the raw header value `remember`-ed for a credential, without parsing it."""

    @abstractmethod
    def remember(self, raw: bytes, credential: str) -> None:
        """Let `recall_raw` find ``credential`` by the raw header value it was read from."""


class LocationSupport(ABC):
    """Capability of an authenticator whose credential an API or a resource may read from a header
    (or query parameter) of its own (``[apis.security] api_key_header``, ``auth_header``...)."""

    @abstractmethod
    def located(self, security: SecurityConfig) -> Authenticator:
        """This authenticator reading its credential where ``security`` says (itself where it names
        no place of this scheme), sharing its keys and caches."""


class ExpiringCache(Generic[K, V]):
    """A bounded dict whose entries expire at a given wall-clock time.

    When full, expired entries go first, then the oldest eighth. ``maxsize=0``
    disables caching.
    """

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._data: dict[K, tuple[float, V]] = {}
        self._aliases: dict[bytes, tuple[bytes, tuple[float, V]]] = {}  # see `alias`

    def get(self, key: K, now: float) -> V | None:
        item = self._data.get(key)
        if item is None:
            return None
        if item[0] <= now:
            self._data.pop(key, None)
            return None
        return item[1]

    def put(self, key: K, value: V, expires: float, now: float) -> None:
        if self.maxsize <= 0 or expires <= now:
            return
        if len(self._data) >= self.maxsize:
            self._evict(now)
        self._data[key] = (float(expires), value)  # compared with time.time() on every hit: float to float

    def alias(self, raw: bytes, existing: K) -> None:
        """Make the raw header value ``raw`` find (`aliased`) what ``existing``, the credential
        parsed from it, finds, with the same expiry; gone with it on `clear` and whenever the
        cache evicts. Filed under its last `ALIAS_TAIL` bytes and compared whole on a hit: a
        server makes a new bytes object for every request, so a dict keyed by the whole value
        would hash all of it every time (a JWT's ~800 bytes: most of what a cached lookup
        costs). Values that share their last bytes (a token's are its signature's) only
        displace each other."""
        item = self._data.get(existing)
        if item is not None and self.maxsize > 0:
            if len(self._aliases) >= self.maxsize:
                self._aliases.clear()
            self._aliases[raw[TAIL]] = (raw, item)

    def aliased(self, raw: bytes, now: float) -> V | None:
        """What `alias` made ``raw`` find, unless it has expired."""
        found = self._aliases.get(raw[TAIL])
        if found is None or found[0] != raw or found[1][0] <= now:
            return None
        return found[1][1]

    def _evict(self, now: float) -> None:
        self._aliases.clear()
        for key in [k for k, (exp, _) in self._data.items() if exp <= now]:
            del self._data[key]
        excess = len(self._data) - self.maxsize + max(1, self.maxsize // 8)
        for key in list(self._data)[: max(0, excess)]:
            del self._data[key]

    def clear(self) -> None:
        self._data.clear()
        self._aliases.clear()

    def __len__(self) -> int:
        return len(self._data)


@dataclass(slots=True, eq=False)
class Verified:
    """A credential that passed, independent of the API it is used for.

    Cached by the schemes; `principal` makes (and remembers) the per-API `Principal`.
    With ``subscriptions`` (a token whose subscriptions are validated), the API must be
    among them (else `NotSubscribed`, 403 900908) and gives the tiers; ``tiers`` are the
    configured ones, ``issuer`` who signed it (it keeps applications of issuers apart).
    """

    method: str
    subject: str
    tier: str
    throttle_key: str
    scopes: tuple[str, ...] = ()
    claims: dict[str, Any] = field(default_factory=dict)
    expires: float = 0.0
    source: Any = None  # an object with a ``generation`` (a JWKSource): stale when it moves on
    at_generation: int = 0
    subscriptions: Subscriptions | None = None
    tiers: Collection[str] | None = None
    issuer: str = ""
    _principals: dict[str, Principal] = field(default_factory=dict)

    def current(self) -> bool:
        return self.source is None or self.source.generation == self.at_generation

    def principal(self, api: ApiConfig) -> Principal:
        p = self._principals.get(api.name)
        if p is None:
            tier, application_tier, application_key = self.tier, None, ""
            subscriptions = self.subscriptions
            if subscriptions is not None:  # raises NotSubscribed: never cached, raised anew each time
                tier, application_tier = tiers_for(subscriptions, api, self.tier, self.tiers)
                if application_tier is not None:
                    application_key = f"{self.issuer}|{subscriptions.application}|{self.subject}"
            p = Principal(
                method=self.method,
                subject=self.subject,
                api=api.name,
                tier=tier,
                scopes=self.scopes,
                methods=(self.method,),
                claims=self.claims,
                throttle_key=self.throttle_key,
                application_tier=application_tier,
                application_key=application_key,
                version=api.version,
            )
            self._principals[api.name] = p
        return p


def without_header(scope: Scope, name: bytes) -> None:
    """Remove every ``name`` header (lower-case bytes) from the request; the others unchanged."""
    scope["headers"] = [h for h in scope["headers"] if h[0] != name]


def without_params(query: bytes, names: Collection[str]) -> bytes:
    """``query`` without the parameters named ``names`` (compared URL-decoded), the others byte for byte."""
    if not query or not names:
        return query
    kept = [p for p in query.split(b"&") if unquote_plus(p.partition(b"=")[0].decode("latin-1")) not in names]
    return b"&".join(kept)


def header_value(scope: Scope, name: bytes) -> bytes | None:
    """The first value of header ``name`` (lower-case bytes), or None."""
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value)
    return None


def authorization(scope: Scope, scheme: str, header: bytes = b"authorization") -> str | None:
    """The credential after ``Authorization: <scheme> `` (case-insensitive scheme; or in ``header``), or None."""
    raw = header_value(scope, header)
    if raw is None:
        return None
    value = raw.decode("latin-1").strip()
    head, _, rest = value.partition(" ")
    if head.lower() != scheme:
        return None
    return rest.strip()


def audiences(aud: Any) -> tuple[str, ...]:
    """The ``aud`` claim as a tuple (it may be one string or a list)."""
    if isinstance(aud, str):
        return (aud,)
    if isinstance(aud, list):
        return tuple(a for a in aud if isinstance(a, str))
    return ()


def invalid(detail: str, challenge: str) -> InvalidCredentials:
    return InvalidCredentials(detail, headers={"www-authenticate": challenge})


# the clock of the credential caches: time.time itself (no Python frame on the per-request path);
# each module imports it by name, so a test can move one module's clock
now = time.time


def schemes_in_use(config: Config) -> list[str]:
    """Application schemes listed by any API or resource, in first-seen order."""
    found: list[str] = []
    for api in config.apis:
        securities = [api.security] + [r.security for r in api.resources if r.security is not None]
        for sec in securities:
            for scheme in sec.application:
                if scheme not in found:
                    found.append(scheme)
    return found


def known_tiers(config: Config) -> frozenset[str]:
    return frozenset(config.throttling.tiers)

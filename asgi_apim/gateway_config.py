"""The gateway's keys of an ``[[apis]]`` entry, as frozen objects.

`asgi_apim.config` calls `parse_gateway` for each API; everything here reads
one `Table` with the getters of `asgi_apim._schema`, so an unknown key or a
bad value is one `ConfigError` naming the key (``apis[0].backend.urls[1]``).

====================================  =========  =====================================================
key                                   default    meaning
====================================  =========  =====================================================
``backend``                           (none)     an http(s) URL, or ``{ type, urls }`` (an endpoint group)
``backend.type``                      (req.)     ``failover`` (in order) or ``load_balance`` (round robin)
``sandbox_backend``                   (none)     the same, for credentials whose key type is SANDBOX
``preserve_host``                     false      send the client's ``Host`` instead of the backend's
``forward_client_certificate``        false      pass the validated client certificate on
``[apis.timeouts] connect/read/total``  5/30/0   seconds; ``total`` 0: no whole-exchange deadline
``[apis.suspension] initial/factor/max``  30/2/300  WSO2's endpoint suspension, seconds
``[apis.backend_jwt]``                (none)     signing_key, header, issuer, validity: X-JWT-Assertion
``resources[].backend``               the API's  the resource's own backend (as ``backend``)
``resources[].sandbox_backend``       the API's  the resource's own sandbox backend
====================================  =========  =====================================================

A resource's ``backend`` and ``sandbox_backend`` replace the API's for the requests the resource
matches, each on its own (a resource with only a ``backend`` still sends sandbox credentials to the
API's ``sandbox_backend``). The API's timeouts, suspension, ``[apis.backend_security]`` and backend JWT
apply to them too: one backend credential per API, so a resource has no ``backend_security`` of its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from asgi_apim._schema import PKCS12_SUFFIXES, Table, backend_url_problem
from asgi_apim.errors import ConfigError

GROUP_TYPES = ("failover", "load_balance")
BACKEND_SECURITY_TYPES = ("basic", "bearer", "api_key", "oauth2")


@dataclass(frozen=True)
class BackendConfig:
    """One backend: ``type`` is ``single`` for a plain URL, else the group's type."""

    urls: tuple[str, ...]
    type: str = "single"

    def __str__(self) -> str:
        return self.urls[0] if self.type == "single" else f"{self.type}{list(self.urls)}"


@dataclass(frozen=True)
class TimeoutsConfig:
    connect: float = 5.0
    read: float = 30.0
    total: float = 0.0  # 0: none


@dataclass(frozen=True)
class SuspensionConfig:
    initial: float = 30.0
    factor: float = 2.0
    max: float = 300.0


@dataclass(frozen=True)
class BackendSecurityConfig:
    type: str = "basic"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    # api_key
    location: str = "header"  # "in": header | query
    name: str | None = None
    value: str | None = field(default=None, repr=False)
    # oauth2 client_credentials
    token_url: str | None = None
    client_id: str | None = None
    client_secret: str | None = field(default=None, repr=False)
    scopes: tuple[str, ...] = ()
    token_timeout: float = 10.0


@dataclass(frozen=True)
class BackendJWTConfig:
    """``[apis.backend_jwt]``: WSO2's backend JWT, the authenticated caller signed for the backend."""

    signing_key: Path
    header: str = "x-jwt-assertion"
    issuer: str = "asgi-apim"
    validity: float = 900.0


@dataclass(frozen=True)
class GatewayApiConfig:
    backend: BackendConfig | None = None
    sandbox_backend: BackendConfig | None = None
    preserve_host: bool = False
    forward_client_certificate: bool = False
    timeouts: TimeoutsConfig = field(default_factory=TimeoutsConfig)
    suspension: SuspensionConfig = field(default_factory=SuspensionConfig)
    backend_security: BackendSecurityConfig | None = None
    backend_jwt: BackendJWTConfig | None = None


def _url(t: Table, key: str, value: object) -> str:
    problem = backend_url_problem(value)
    if problem is not None:
        raise ConfigError(key, problem)
    return str(value)


def _backend(t: Table, name: str) -> BackendConfig | None:
    if not t.has(name):
        return None
    raw = t.value(name)
    if isinstance(raw, str):
        return BackendConfig(urls=(_url(t, t._k(name), raw),))
    if not isinstance(raw, dict):
        raise ConfigError(t._k(name), "must be a URL or a table { type, urls }")
    g = t.table(name)
    kind = g.str("type", required=True, choices=GROUP_TYPES)
    urls = g.strs("urls")
    g.done()
    if not urls:
        raise ConfigError(f"{g.key}.urls", "must list at least one URL")
    return BackendConfig(urls=tuple(_url(g, f"{g.key}.urls[{i}]", u) for i, u in enumerate(urls)), type=kind)


def _backend_security(t: Table) -> BackendSecurityConfig:
    kind = t.str("type", "basic", choices=BACKEND_SECURITY_TYPES)
    b = BackendSecurityConfig(
        type=kind,
        username=t.str("username"),
        password=t.str("password"),
        token=t.str("token"),
        location=t.str("in", "header", choices=("header", "query")),
        name=t.str("name"),
        value=t.str("value"),
        token_url=t.http_url("token_url"),
        client_id=t.str("client_id"),
        client_secret=t.str("client_secret"),
        scopes=t.strs("scopes"),
        token_timeout=t.number("token_timeout", 10, minimum=0.1, maximum=300),
    )
    t.done()
    needed = {
        "basic": ("username", "password"),
        "bearer": ("token",),
        "api_key": ("name", "value"),
        "oauth2": ("token_url", "client_id", "client_secret"),
    }[kind]
    for key in needed:
        if not getattr(b, key):
            raise ConfigError(f"{t.key}.{key}", f"is required for type = {kind!r}")
    if kind == "basic" and ":" in (b.username or ""):
        raise ConfigError(f"{t.key}.username", "cannot contain ':' (RFC 7617)")
    if kind == "api_key" and b.location == "header":
        b2 = Table({"name": b.name}, t.key, t.base)
        b2.header_name("name", "x")
    return b


def parse_resource_backends(r: Table) -> tuple[BackendConfig | None, BackendConfig | None]:
    """The ``backend`` and ``sandbox_backend`` of the resource table ``r`` (None: the API's)."""
    if r.has("backend_security"):
        raise ConfigError(
            r._k("backend_security"),
            "a resource cannot have its own: the API's [apis.backend_security] is sent to every backend of the API",
        )
    return _backend(r, "backend"), _backend(r, "sandbox_backend")


def parse_gateway(t: Table) -> GatewayApiConfig:
    """The gateway keys of the API table ``t`` (the others are left to `asgi_apim.config`)."""
    backend = _backend(t, "backend")
    sandbox = _backend(t, "sandbox_backend")
    if sandbox is not None and backend is None:
        raise ConfigError(t._k("sandbox_backend"), "needs a (production) backend too")
    timeouts_t = t.table("timeouts")
    timeouts = TimeoutsConfig(
        connect=timeouts_t.number("connect", 5, minimum=0.001, maximum=3600),
        read=timeouts_t.number("read", 30, minimum=0.001, maximum=86400),
        total=timeouts_t.number("total", 0, minimum=0, maximum=86400),
    )
    timeouts_t.done()
    suspension_t = t.table("suspension")
    suspension = SuspensionConfig(
        initial=suspension_t.number("initial", 30, minimum=0, maximum=86400),
        factor=suspension_t.number("factor", 2, minimum=1, maximum=100),
        max=suspension_t.number("max", 300, minimum=0, maximum=86400),
    )
    suspension_t.done()
    if suspension.max < suspension.initial:
        raise ConfigError(f"{suspension_t.key}.max", "is shorter than initial")
    security = _backend_security(t.table("backend_security")) if t.has("backend_security") else None
    backend_jwt = None
    if t.has("backend_jwt"):
        j = t.table("backend_jwt")
        header: str = j.header_name("header", "X-JWT-Assertion")
        backend_jwt = BackendJWTConfig(
            signing_key=j.path("signing_key", required=True),
            header=header.lower(),
            issuer=j.str("issuer", "asgi-apim", required=True),
            validity=j.number("validity", 900, minimum=10, maximum=86400),
        )
        j.done()
    gw = GatewayApiConfig(
        backend=backend,
        sandbox_backend=sandbox,
        preserve_host=t.bool("preserve_host", False),
        forward_client_certificate=t.bool("forward_client_certificate", False),
        timeouts=timeouts,
        suspension=suspension,
        backend_security=security,
        backend_jwt=backend_jwt,
    )
    if backend is None:
        for key in ("preserve_host", "forward_client_certificate", "timeouts", "suspension", "backend_jwt"):
            if t.has(key):
                raise ConfigError(t._k(key), "applies to an API with a backend only")
    return gw


@dataclass(frozen=True)
class SSLProfileConfig:
    """``[[ssl_profiles]]``: TLS towards the backends at ``servers`` (``host:port``), as WSO2's dynamic SSL
    profiles. ``ca`` is PEM, DER, PKCS#12 or JKS (``ca_password``); ``certificate`` is PEM with ``key``, or a
    PKCS#12 file holding both (``key_password`` opens either)."""

    servers: tuple[str, ...]
    ca: Path | None = None
    certificate: Path | None = None
    key: Path | None = None
    ca_password: str | None = field(default=None, repr=False)
    key_password: str | None = field(default=None, repr=False)
    hostname_verification: bool = True
    reload_interval: float = 10.0


@dataclass(frozen=True)
class GatewayTLSConfig:
    """``[gateway]`` ``ca_bundle``: what HTTPS backends without an SSL profile are verified against
    (None: the system's CAs)."""

    ca_bundle: Path | None = None
    ca_bundle_password: str | None = field(default=None, repr=False)
    reload_interval: float = 10.0


def _server_address(key: str, value: str) -> str:
    """``host:port`` (``[v6]:port``) with a port in range; answered lower-cased, brackets removed."""
    host, sep, port = value.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536 or any(c in host for c in "/[]@ "):
        raise ConfigError(key, f"{value!r} is not host:port (an IPv6 address in brackets: [::1]:8443)")
    return f"{host.lower()}:{int(port)}"


def _ssl_profile(t: Table) -> SSLProfileConfig:
    servers = tuple(_server_address(f"{t.key}.servers[{i}]", v) for i, v in enumerate(t.strs("servers")))
    if not servers:
        raise ConfigError(f"{t.key}.servers", "must list at least one host:port")
    p = SSLProfileConfig(
        servers=servers,
        ca=t.path("ca"),
        certificate=t.path("certificate"),
        key=t.path("key"),
        ca_password=t.str("ca_password"),
        key_password=t.str("key_password"),
        hostname_verification=t.bool("hostname_verification", True),
        reload_interval=t.number("reload_interval", 10.0),
    )
    t.done()
    bundled = p.certificate is not None and p.certificate.suffix.lower() in PKCS12_SUFFIXES
    if p.key is not None and (p.certificate is None or bundled):
        raise ConfigError(f"{t.key}.key", "needs a PEM certificate (a PKCS#12 certificate holds its own key)")
    if p.certificate is not None and p.key is None and not bundled:
        raise ConfigError(f"{t.key}.key", "is required with a PEM certificate")
    if p.key_password is not None and p.certificate is None:
        raise ConfigError(f"{t.key}.key_password", "is set but there is no certificate")
    if p.ca_password is not None and p.ca is None:
        raise ConfigError(f"{t.key}.ca_password", "is set but there is no ca")
    return p


def parse_ssl_profiles(root: Table) -> tuple[SSLProfileConfig, ...]:
    profiles = tuple(_ssl_profile(t) for t in root.tables("ssl_profiles"))
    owner: dict[str, int] = {}
    for i, p in enumerate(profiles):
        for server in p.servers:
            if server in owner:
                raise ConfigError(f"ssl_profiles[{i}].servers", f"{server} is already in ssl_profiles[{owner[server]}]")
            owner[server] = i
    return profiles


def parse_gateway_tls(t: Table) -> GatewayTLSConfig:
    g = GatewayTLSConfig(
        ca_bundle=t.path("ca_bundle"),
        ca_bundle_password=t.str("ca_bundle_password"),
        reload_interval=t.number("ca_bundle_reload_interval", 10.0),
    )
    if g.ca_bundle_password is not None and g.ca_bundle is None:
        raise ConfigError(f"{t.key}.ca_bundle_password", "is set but there is no ca_bundle")
    return g

"""``deployment.toml`` -> frozen configuration objects.

The file is read once (tomllib). Every string value may be written as
``$env{NAME}`` (an environment variable), ``$secret{NAME}`` (an entry of the
``[secrets]`` table) or directly as a ciphertext made by ``asgi-apim encrypt``;
encrypted values are decrypted here, once, with ``[encryption] key``. Relative
paths are resolved against the directory of the file. An unknown key or a bad
value stops loading with one `ConfigError` that names the key.

The sections with a module of their own: ``[[apis]]`` (`asgi_apim.apis_config`), ``[registry]``
(`asgi_apim.registry_config`), the gateway's keys and ``[[ssl_profiles]]`` (`asgi_apim.gateway_config`),
``[api_keys.issuer]`` (`asgi_apim.apikeys_config`), CORS, contexts and interceptors
(`asgi_apim.edge_config`). Their types are importable from here too.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from asgi_apim._schema import Decrypt, Resolver, Secrets, Table, plain_path, read_toml, resolve_document
from asgi_apim._tiers import DEFAULT_TIERS, parse_tiers
from asgi_apim.apikeys_config import ApiKeyIssuerConfig, TrustedIssuerConfig, parse_issuer, parse_trusted_issuers
from asgi_apim.apis_config import APPLICATION_SCHEMES as APPLICATION_SCHEMES
from asgi_apim.apis_config import HTTP_METHODS as HTTP_METHODS
from asgi_apim.apis_config import MUTUAL_SSL_MODES as MUTUAL_SSL_MODES
from asgi_apim.apis_config import SCOPED_SCHEMES as SCOPED_SCHEMES
from asgi_apim.apis_config import ApiConfig as ApiConfig
from asgi_apim.apis_config import CertificateRegistration as CertificateRegistration
from asgi_apim.apis_config import ResourceConfig as ResourceConfig
from asgi_apim.apis_config import SecurityConfig as SecurityConfig
from asgi_apim.apis_config import parse_api
from asgi_apim.errors import ConfigError
from asgi_apim.gateway_config import GatewayTLSConfig as GatewayTLSConfig
from asgi_apim.gateway_config import SSLProfileConfig as SSLProfileConfig
from asgi_apim.gateway_config import parse_gateway_tls, parse_ssl_profiles
from asgi_apim.registry_config import RegistryAdminConfig as RegistryAdminConfig
from asgi_apim.registry_config import RegistryConfig as RegistryConfig
from asgi_apim.registry_config import parse_fingerprint as parse_fingerprint
from asgi_apim.registry_config import parse_registry
from asgi_apim.secrets.keys import (
    EncryptionConfig,
    decryptor_for,
    encryption_config,
    ensure_key,
    generate_key,
    key_absent,
)

logger = logging.getLogger("asgi_apim.config")

HEADER_FORMATS = ("auto", "url_pem", "pem", "base64_der", "xfcc", "rfc9440")
STRATEGIES = ("fixed-window", "moving-window", "sliding-window-counter")


@dataclass(frozen=True)
class MutualSSLConfig:
    certificate_header: str = "x-wso2-client-certificate"
    header_format: str = "auto"
    trusted_proxies: tuple[str, ...] = ()  # the certificate header is believed from no peer unless listed
    enable_client_validation: bool = False
    enable_certificate_chain_validation: bool = True
    truststore: tuple[Path, ...] = ()
    truststore_password: str | None = field(default=None, repr=False)
    crl: tuple[Path, ...] = ()
    reload_interval: float = 10.0


@dataclass(frozen=True)
class ThrottlingConfig:
    storage: str = "memory://"
    strategy: str = "moving-window"
    fail_open: bool = True
    tiers: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_TIERS))
    headers: str = "ratelimit"  # ratelimit | x-ratelimit | none
    # in a configuration file, the default of every [[key_managers]] entry's own subscriber_claim
    subscriber_claim: tuple[str, ...] = ("azp", "sub")


@dataclass(frozen=True)
class KeyManagerConfig:
    name: str
    issuer: str
    audience: tuple[str, ...] = ()
    jwks_url: str | None = None
    jwks_file: Path | None = None
    algorithms: tuple[str, ...] = ("RS256",)
    shared_secret: str | None = field(default=None, repr=False)
    introspection_url: str | None = None
    client_id: str | None = None
    client_secret: str | None = field(default=None, repr=False)
    leeway: float = 30.0
    tier_claim: str | None = None
    default_tier: str = "Unlimited"
    subscriber_claim: tuple[str, ...] = ("azp", "sub")
    jwks_refresh_interval: float = 300.0
    jwks_min_refetch_interval: float = 30.0
    # outbound calls (JWKS, introspection): see asgi_apim._fetch
    fetch_timeout: float = 5.0  # total deadline of one call: connect, headers and body
    jwks_wait: float = 5.0  # how long a token with an unknown kid waits for the refetch
    introspection_negative_ttl: float = 5.0  # an inactive token is remembered this long
    introspection_max_concurrency: int = 32  # calls in flight to the endpoint; more are refused
    # True: a JWT must list the API in its subscribedAPIs (else 403 900908); see asgi_apim.auth.subscriptions
    validate_subscription: bool = False


@dataclass(frozen=True)
class ApiKeysConfig:
    header: str = "apikey"
    query_param: str = "apikey"
    signing_key: Path | None = None
    revoked: tuple[str, ...] = ()
    issuer: ApiKeyIssuerConfig = field(default_factory=ApiKeyIssuerConfig)  # the token service
    trusted_issuers: tuple[TrustedIssuerConfig, ...] = ()  # see asgi_apim.apikeys_config


@dataclass(frozen=True)
class BasicAuthConfig:
    users_file: Path | None = None
    realm: str = "asgi-apim"
    tier: str = "Unlimited"


@dataclass(frozen=True)
class MetricsConfig:
    """``[metrics]``: Prometheus text at ``path``, answered in front of the stack (no credentials)."""

    enabled: bool = False
    path: str = "/metrics"


@dataclass(frozen=True)
class Config:
    path: Path | None = None
    public_paths: tuple[str, ...] = ()
    debug_headers: bool = False
    forward_credentials: bool = False
    encryption: EncryptionConfig = field(default_factory=EncryptionConfig)
    secrets: Secrets = field(default_factory=Secrets)
    mutual_ssl: MutualSSLConfig = field(default_factory=MutualSSLConfig)
    throttling: ThrottlingConfig = field(default_factory=ThrottlingConfig)
    key_managers: tuple[KeyManagerConfig, ...] = ()
    api_keys: ApiKeysConfig = field(default_factory=ApiKeysConfig)
    basic_auth: BasicAuthConfig = field(default_factory=BasicAuthConfig)
    registry: RegistryConfig = field(default_factory=RegistryConfig)
    apis: tuple[ApiConfig, ...] = ()
    ssl_profiles: tuple[SSLProfileConfig, ...] = ()
    gateway_tls: GatewayTLSConfig = field(default_factory=GatewayTLSConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)

    @property
    def uses_mutual_ssl(self) -> bool:
        """Whether any API or resource reads client certificates."""
        return any(
            sec.mutual_ssl != "disabled"
            for api in self.apis
            for sec in (api.security, *(r.security for r in api.resources if r.security))
        )

    def api(self, name: str) -> ApiConfig:
        for api in self.apis:
            if api.name == name:
                return api
        raise KeyError(name)


def _mutual_ssl(t: Table) -> MutualSSLConfig:
    cfg = MutualSSLConfig(
        certificate_header=t.header_name("certificate_header", "X-WSO2-CLIENT-CERTIFICATE").lower(),
        header_format=t.str("header_format", "auto", choices=HEADER_FORMATS),
        trusted_proxies=t.networks("trusted_proxies", ()),
        enable_client_validation=t.bool("enable_client_validation", False),
        enable_certificate_chain_validation=t.bool("enable_certificate_chain_validation", True),
        truststore=t.paths("truststore"),
        truststore_password=t.str("truststore_password"),
        crl=t.paths("crl"),
        reload_interval=t.number("reload_interval", 10, minimum=0.1),
    )
    t.done()
    return cfg


def _throttling(t: Table) -> ThrottlingConfig:
    tiers_t = t.table("tiers")
    tiers = dict(DEFAULT_TIERS)
    for name in list(tiers_t.raw):
        tiers[name] = tiers_t.str(name, required=True)
    tiers_t.done()
    parse_tiers(tiers, defaults=False)  # a limit that does not parse stops loading, naming throttling.tiers.NAME
    storage = t.str("storage", "memory://", required=True)
    if "://" not in storage:
        raise ConfigError(f"{t.key}.storage", "must be a limits storage URI such as memory:// or redis://host:6379/0")
    cfg = ThrottlingConfig(
        storage=storage,
        strategy=t.str("strategy", "moving-window", choices=STRATEGIES),
        fail_open=t.bool("fail_open", True),
        tiers=tiers,
        headers=t.str("headers", "ratelimit", choices=("ratelimit", "x-ratelimit", "none")),
        subscriber_claim=t.strs("subscriber_claim", ("azp", "sub")),
    )
    t.done()
    return cfg


def _key_manager(t: Table, subscriber_claim: tuple[str, ...]) -> KeyManagerConfig:
    """A ``[[key_managers]]`` entry.

    ``subscriber_claim`` defaults to ``[throttling] subscriber_claim``.
    """
    km = KeyManagerConfig(
        name=t.str("name", required=True),
        issuer=t.str("issuer", required=True),
        audience=t.strs("audience"),
        jwks_url=t.http_url("jwks_url"),
        jwks_file=t.path("jwks_file"),
        algorithms=t.strs("algorithms", ("RS256",)),
        shared_secret=t.str("shared_secret"),
        introspection_url=t.http_url("introspection_url"),
        client_id=t.str("client_id"),
        client_secret=t.str("client_secret"),
        leeway=t.number("leeway", 30, maximum=600),  # clock skew: more would make `exp` meaningless
        tier_claim=t.str("tier_claim"),
        default_tier=t.str("default_tier", "Unlimited", required=True),
        subscriber_claim=t.strs("subscriber_claim", subscriber_claim),
        jwks_refresh_interval=t.number("jwks_refresh_interval", 300, minimum=1),
        jwks_min_refetch_interval=t.number("jwks_min_refetch_interval", 30, minimum=0),
        fetch_timeout=t.number("fetch_timeout", 5, minimum=0.1, maximum=300),
        jwks_wait=t.number("jwks_wait", 5, maximum=300),
        introspection_negative_ttl=t.number("introspection_negative_ttl", 5, maximum=3600),
        introspection_max_concurrency=t.integer("introspection_max_concurrency", 32, minimum=1, maximum=10_000),
        validate_subscription=t.bool("validate_subscription", False),
    )
    t.done()
    if not (km.jwks_url or km.jwks_file or km.shared_secret or km.introspection_url):
        raise ConfigError(t.key, "needs jwks_url, jwks_file, shared_secret or introspection_url")
    if km.jwks_url and km.jwks_file:
        raise ConfigError(f"{t.key}.jwks_file", "and jwks_url are both set: give one source of keys")
    if not km.algorithms:
        raise ConfigError(f"{t.key}.algorithms", "lists no algorithm: no token could pass")
    if any(a.lower() == "none" for a in km.algorithms):
        raise ConfigError(f"{t.key}.algorithms", "'none' is never allowed")
    if any(a.upper().startswith("HS") for a in km.algorithms) and not km.shared_secret:
        raise ConfigError(f"{t.key}.algorithms", "HMAC algorithms need a shared_secret")
    hmac_bits = max((int(a[2:]) for a in km.algorithms if a.upper() in ("HS256", "HS384", "HS512")), default=0)
    if km.shared_secret and len(km.shared_secret.encode()) * 8 < hmac_bits:  # RFC 7518 3.2: a key as long as the hash
        raise ConfigError(
            f"{t.key}.shared_secret", f"is shorter than {hmac_bits // 8} bytes, the least HS{hmac_bits} allows"
        )
    return km


def _check_admin_path(cfg: Config) -> None:
    admin = cfg.registry.admin
    if not admin.enabled:
        return
    prefix = admin.path
    taken = [(f"apis[{a.name}].context", c) for a in cfg.apis for c in a.contexts] + [
        ("public_paths", p) for p in cfg.public_paths
    ]
    for key, other in taken:
        other = other.rstrip("/") or "/"
        if other == "/" or other == prefix or other.startswith(prefix + "/") or prefix.startswith(other + "/"):
            raise ConfigError("registry.admin.path", f"{prefix!r} overlaps {key} {other!r}: give the admin API its own")


def _metrics(t: Table) -> MetricsConfig:
    metrics = MetricsConfig(enabled=t.bool("enabled", False), path=t.str("path", "/metrics", required=True))
    t.done()
    if not plain_path(metrics.path) or metrics.path == "/":
        raise ConfigError("metrics.path", f"{metrics.path!r} must be an absolute path such as /metrics")
    return metrics


def _check_metrics_path(cfg: Config) -> None:
    if not cfg.metrics.enabled:
        return
    prefix = cfg.metrics.path.rstrip("/")
    taken = [(f"apis[{a.name}].context", a.context) for a in cfg.apis] + [("public_paths", p) for p in cfg.public_paths]
    if cfg.registry.admin.enabled:
        taken.append(("registry.admin.path", cfg.registry.admin.path))
    for key, other in taken:
        other = other.rstrip("/") or "/"
        if other == "/" or other == prefix or other.startswith(prefix + "/") or prefix.startswith(other + "/"):
            raise ConfigError("metrics.path", f"{prefix!r} overlaps {key} {other!r}: give the metrics their own path")


def _check_tiers(cfg: Config) -> None:
    known = cfg.throttling.tiers
    for api in cfg.apis:
        where = f"apis[{api.name}]"
        refs = [(f"{where}.tier", api.tier)]
        refs += [(f"{where}.certificates[{c.alias}].tier", c.tier) for c in api.certificates]
        refs += [(f"{where}.resources[{r.path}].tier", r.tier) for r in api.resources if r.tier]
        refs += [(f"{where}.truststore_tier", api.truststore_tier)] if api.truststore_tier else []
        for key, tier in refs:
            if tier not in known:
                raise ConfigError(key, f"unknown tier {tier!r} (known: {', '.join(sorted(known))})")
    for km in cfg.key_managers:
        if km.default_tier not in known:
            raise ConfigError(f"key_managers[{km.name}].default_tier", f"unknown tier {km.default_tier!r}")
    if cfg.basic_auth.tier not in known:
        raise ConfigError("basic_auth.tier", f"unknown tier {cfg.basic_auth.tier!r}")


def _check_issuer(cfg: Config) -> None:
    """The token service's paths are its own, its APIs and tiers exist, and it has a key to sign with."""
    issuer = cfg.api_keys.issuer
    known = cfg.throttling.tiers
    for i, t in enumerate(cfg.api_keys.trusted_issuers):
        if t.default_tier not in known:
            raise ConfigError(f"api_keys.trusted_issuers[{i}].default_tier", f"unknown tier {t.default_tier!r}")
    if issuer.tier not in known:
        raise ConfigError("api_keys.issuer.tier", f"unknown tier {issuer.tier!r}")
    names = {a.name for a in cfg.apis}
    for i, entry in enumerate(issuer.apis):
        if entry.name not in names:
            raise ConfigError(f"api_keys.issuer.apis[{i}].name", f"no [[apis]] entry is named {entry.name!r}")
        if entry.tier is not None and entry.tier not in known:
            raise ConfigError(f"api_keys.issuer.apis[{i}].tier", f"unknown tier {entry.tier!r}")
    if not issuer.enabled:
        return
    if cfg.api_keys.signing_key is None:
        raise ConfigError("api_keys.signing_key", "is needed by [api_keys.issuer]: the key it signs API keys with")
    if cfg.basic_auth.users_file is None and not (cfg.uses_mutual_ssl or cfg.mutual_ssl.truststore):
        raise ConfigError(
            "api_keys.issuer.enabled",
            "no caller could authenticate: set [basic_auth] users_file, or trust client certificates"
            " ([mutual_ssl] truststore or an API's registered certificates)",
        )
    taken = [(f"apis[{a.name}].context", a.context) for a in cfg.apis] + [("public_paths", p) for p in cfg.public_paths]
    if cfg.registry.admin.enabled:
        taken.append(("registry.admin.path", cfg.registry.admin.path))
    for setting, path in (("path", issuer.path), ("jwks_path", issuer.jwks_path)):
        for key, other in taken:
            other = other.rstrip("/") or "/"
            if other == "/" or other == path or path.startswith(other + "/") or other.startswith(path + "/"):
                raise ConfigError(f"api_keys.issuer.{setting}", f"{path!r} overlaps {key} {other!r}: give it its own")


def parse_config(
    raw: dict[str, Any], *, base: Path, path: Path | None = None, decrypt: Decrypt | None = None
) -> Config:
    """Build a `Config` from an already-parsed TOML document."""
    encryption = encryption_config(raw)
    if decrypt is None and (encryption.key is not None or encryption.old_keys):
        decrypt = decryptor_for(encryption)
    resolved, secrets = resolve_document(raw, decrypt)
    resolve = Resolver(secrets, decrypt)
    root = Table(resolved, "", base)
    root.seen.update(("encryption", "secrets"))
    public_paths = root.strs("public_paths")
    for p in public_paths:
        if not plain_path(p):
            raise ConfigError(
                "public_paths",
                f"{p!r} must be an absolute path such as /health (no query, template,"
                " space or dot-segment: it could never be matched)",
            )
    forward_credentials = root.bool("forward_credentials", False)
    apis = tuple(parse_api(t, forward_credentials, resolve) for t in root.tables("apis"))
    names = [a.name for a in apis]
    if len(set(names)) != len(names):
        raise ConfigError("apis", "API names must be unique")
    contexts = [c for a in apis for c in a.contexts]
    if len(set(contexts)) != len(contexts):
        raise ConfigError("apis", "two APIs share a context (a default version's unversioned context included)")
    for p in public_paths:  # matched first, by path segments: a public path at or above a context takes the whole API
        prefix = p.rstrip("/") or "/"
        for a in apis:
            for context in a.contexts:
                if prefix == "/" or context == prefix or context.startswith(prefix + "/"):
                    raise ConfigError(
                        "public_paths",
                        f"{p!r} covers API {a.name!r} (context {context}): its security would never apply;"
                        " make resources public with `public = true` instead",
                    )
    throttling = _throttling(root.table("throttling"))
    kms = tuple(_key_manager(t, throttling.subscriber_claim) for t in root.tables("key_managers"))
    km_names = [km.name for km in kms]
    if len(set(km_names)) != len(km_names):
        raise ConfigError("key_managers", "key manager names must be unique")
    issuers: dict[str, str] = {}
    for km in (
        kms
    ):  # a JWT goes to the key manager of its `iss`: a second one validating JWTs of that issuer would never be asked
        if not (km.jwks_url or km.jwks_file or km.shared_secret):
            continue  # introspection only: opaque tokens, asked in turn
        if km.issuer in issuers:
            raise ConfigError(
                f"key_managers[{km.name}].issuer",
                f"{km.issuer!r} is already the issuer of key manager {issuers[km.issuer]!r},"
                " whose JWTs it validates (give one key manager every key source of an issuer)",
            )
        issuers[km.issuer] = km.name
    api_keys_t = root.table("api_keys")
    issuer = parse_issuer(api_keys_t)
    api_keys = ApiKeysConfig(
        header=api_keys_t.header_name("header", "apikey").lower(),
        query_param=api_keys_t.str("query_param", "apikey", required=True),
        signing_key=api_keys_t.path("signing_key"),
        revoked=api_keys_t.strs("revoked"),
        issuer=issuer,
        trusted_issuers=parse_trusted_issuers(api_keys_t, issuer),
    )
    api_keys_t.done()
    basic_t = root.table("basic_auth")
    basic = BasicAuthConfig(
        users_file=basic_t.path("users_file"),
        realm=basic_t.str("realm", "asgi-apim", required=True),
        tier=basic_t.str("tier", "Unlimited", required=True),
    )
    basic_t.done()
    registry = parse_registry(root)
    gateway_t = root.table("gateway")
    gateway_tls = parse_gateway_tls(gateway_t)
    gateway_t.done()
    cfg = Config(
        path=path,
        public_paths=public_paths,
        debug_headers=root.bool("debug_headers", False),
        forward_credentials=forward_credentials,
        encryption=encryption,
        secrets=secrets,
        mutual_ssl=_mutual_ssl(root.table("mutual_ssl")),
        throttling=throttling,
        key_managers=kms,
        api_keys=api_keys,
        basic_auth=basic,
        registry=registry,
        apis=apis,
        ssl_profiles=parse_ssl_profiles(root),
        gateway_tls=gateway_tls,
        metrics=_metrics(root.table("metrics")),
    )
    root.done()
    _check_tiers(cfg)
    _check_admin_path(cfg)
    _check_metrics_path(cfg)
    _check_issuer(cfg)
    return cfg


def load_config(path: str | os.PathLike[str], *, read_only: bool = False) -> Config:
    """Read and validate a ``deployment.toml``. Raises `ConfigError` naming the bad key.

    Without ``[encryption] key``, a key is generated, written into the file and an ALERT
    logged (WSO2's start-up behaviour). ``read_only=True`` is for diagnostics (``check``,
    ``apikey issue``): the file is never written, the key stays absent, and an encrypted
    value then stops loading, naming its key.
    """
    path = Path(path).resolve()
    raw = read_toml(path)
    if key_absent(raw) and not read_only:
        probe = {**raw, "encryption": {**raw.get("encryption", {}), "key": generate_key()}}
        parse_config(probe, base=path.parent, path=path)  # a broken file is reported, never rewritten
        raw = ensure_key(path)  # WSO2's behaviour: generate, write into the file, log an ALERT
    return parse_config(raw, base=path.parent, path=path)


def load_secrets(config: str | os.PathLike[str] | Config) -> Mapping[str, str]:
    """The decrypted ``[secrets]`` table, for the application. Its repr shows names only."""
    if isinstance(config, Config):
        return config.secrets
    return load_config(config).secrets

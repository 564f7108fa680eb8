"""``[api_keys.issuer]`` and ``[[api_keys.trusted_issuers]]``, as frozen objects.

`asgi_apim.config` calls `parse_issuer` and `parse_trusted_issuers` with the
``[api_keys]`` table; everything here reads one `Table` with the getters of
`asgi_apim._schema`, so an unknown key or a bad value is one `ConfigError`
naming the key (``api_keys.trusted_issuers[0].jwks_url``).

The token service (``[api_keys.issuer]``) signs with ``[api_keys] signing_key``,
the key ``asgi-apim apikey issue`` signs with: one format, one key.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from asgi_apim._schema import Table, plain_path
from asgi_apim.errors import ConfigError

DEFAULT_ISSUER = "asgi-apim"  # the ``iss`` of every key issued before the token service existed
DEFAULT_AUDIENCE = "http://org.wso2.apimgt/gateway"  # WSO2 Microgateway's audience of its API keys
ASYMMETRIC = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")


@dataclass(frozen=True)
class IssuedApiConfig:
    """``[[api_keys.issuer.apis]]``: an API the token service's keys open, the versions allowed
    (``*``: any), and the subscription tier written for it (None: the issuer's ``tier``)."""

    name: str
    versions: tuple[str, ...] = ("*",)
    tier: str | None = None


@dataclass(frozen=True)
class ApiKeyIssuerConfig:
    enabled: bool = False
    path: str = "/apikey"
    jwks_path: str = "/.well-known/jwks.json"
    validity: int = 3600
    name: str = DEFAULT_ISSUER  # the keys' ``iss``: what another instance names as a trusted issuer
    audience: str = DEFAULT_AUDIENCE
    tier: str = "Unlimited"
    apis: tuple[IssuedApiConfig, ...] = ()  # empty: every API that accepts API keys


@dataclass(frozen=True)
class TrustedIssuerConfig:
    """``[[api_keys.trusted_issuers]]``: API keys whose ``iss`` is ``name``, verified with the keys
    of ``jwks_url``, ``jwks_file`` or ``certificate`` (exactly one)."""

    name: str
    jwks_url: str | None = None
    jwks_file: Path | None = None
    certificate: Path | None = None
    algorithms: tuple[str, ...] = ASYMMETRIC
    audience: tuple[str, ...] = ()
    validate_subscription: bool = True
    default_tier: str = "Unlimited"
    leeway: float = 30.0
    fetch_timeout: float = 5.0
    jwks_refresh_interval: float = 300.0


def _plain(t: Table, name: str, default: str) -> str:
    value = t.str(name, default, required=True)
    if not plain_path(value) or value == "/":
        raise ConfigError(t._k(name), f"{value!r} must be an absolute path such as {default} (not /)")
    return value.rstrip("/")


def parse_issuer(api_keys: Table) -> ApiKeyIssuerConfig:
    """``[api_keys.issuer]`` (absent: the token service is off)."""
    t = api_keys.table("issuer")
    apis = []
    for a in t.tables("apis"):
        versions = a.strs("versions", ("*",))
        if not versions or any(not v.strip() for v in versions):
            raise ConfigError(a._k("versions"), 'must list versions such as ["1.0.0"], or ["*"] for any')
        tier = a.str("tier")
        if tier == "":
            raise ConfigError(a._k("tier"), "is empty: name a tier, or leave the key out")
        apis.append(IssuedApiConfig(name=a.str("name", required=True), versions=versions, tier=tier))
        a.done()
    names = [a.name for a in apis]
    if len(set(names)) != len(names):
        raise ConfigError(t._k("apis"), "names an API twice: list its versions in one entry")
    cfg = ApiKeyIssuerConfig(
        enabled=t.bool("enabled", False),
        path=_plain(t, "path", "/apikey"),
        jwks_path=_plain(t, "jwks_path", "/.well-known/jwks.json"),
        validity=t.integer("validity", 3600, minimum=1, maximum=10 * 365 * 86_400),
        name=t.str("name", DEFAULT_ISSUER, required=True),
        audience=t.str("audience", DEFAULT_AUDIENCE, required=True),
        tier=t.str("tier", "Unlimited", required=True),
        apis=tuple(apis),
    )
    t.done()
    if cfg.path == cfg.jwks_path:
        raise ConfigError(t._k("jwks_path"), "is the same path as path: give each its own")
    return cfg


def _trusted_issuer(t: Table) -> TrustedIssuerConfig:
    cfg = TrustedIssuerConfig(
        name=t.str("name", required=True),
        jwks_url=t.http_url("jwks_url"),
        jwks_file=t.path("jwks_file"),
        certificate=t.path("certificate"),
        algorithms=t.strs("algorithms", ASYMMETRIC),
        audience=t.strs("audience"),
        validate_subscription=t.bool("validate_subscription", True),
        default_tier=t.str("default_tier", "Unlimited", required=True),
        leeway=t.number("leeway", 30, maximum=600),
        fetch_timeout=t.number("fetch_timeout", 5, minimum=0.1, maximum=300),
        jwks_refresh_interval=t.number("jwks_refresh_interval", 300, minimum=1),
    )
    t.done()
    sources = [s for s in (cfg.jwks_url, cfg.jwks_file, cfg.certificate) if s is not None]
    if len(sources) != 1:
        raise ConfigError(t.key, "needs exactly one of jwks_url, jwks_file or certificate")
    if not cfg.algorithms:
        raise ConfigError(t._k("algorithms"), "lists no algorithm: no key could pass")
    unknown = [a for a in cfg.algorithms if a not in ASYMMETRIC]
    if unknown:
        raise ConfigError(
            t._k("algorithms"), f"{unknown[0]!r} is not allowed (one of {', '.join(ASYMMETRIC)}; never none or HS*)"
        )
    return cfg


def parse_trusted_issuers(api_keys: Table, own: ApiKeyIssuerConfig) -> tuple[TrustedIssuerConfig, ...]:
    issuers = tuple(_trusted_issuer(t) for t in api_keys.tables("trusted_issuers"))
    names = [i.name for i in issuers]
    if len(set(names)) != len(names):
        raise ConfigError("api_keys.trusted_issuers", "issuer names must be unique")
    for i, issuer in enumerate(issuers):
        if issuer.name in (own.name, DEFAULT_ISSUER):
            raise ConfigError(
                f"api_keys.trusted_issuers[{i}].name",
                f"{issuer.name!r} is this instance's own issuer name ([api_keys.issuer] name): give another",
            )
    return issuers

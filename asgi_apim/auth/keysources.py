"""Whose API keys are accepted, and with which keys they are verified.

An API key's unverified ``iss`` picks one `KeyIssuer`:

- this instance (``[api_keys] signing_key``): ``iss`` is ``[api_keys.issuer] name``, or
  ``asgi-apim``, the name every key carried before the name could be chosen; the algorithm is
  exactly the one the key type gives; the key must list the API (its subscriptions are always
  validated) and name a configured tier;
- a ``[[api_keys.trusted_issuers]]`` entry: another instance, or WSO2 API Manager's Developer
  Portal. Its keys come from a JWKS URL or file (`asgi_apim.auth.jwks.JWKSource`, the same
  machinery as the key managers', with its total-deadline fetch) or from a certificate.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from asgi_apim.apikeys_config import DEFAULT_ISSUER, TrustedIssuerConfig
from asgi_apim.auth.jwks import ALGORITHMS, JWKSource
from asgi_apim.auth.signing import algorithm_for
from asgi_apim.errors import ConfigError


class KeyIssuer:
    """One issuer of API keys: its ``iss`` names, algorithms, keys and rules. Built once."""

    def __init__(
        self,
        names: Collection[str],
        algorithms: Collection[str],
        *,
        static: Any = None,
        source: JWKSource | None = None,
        own: bool = False,
        validate_subscription: bool = True,
        default_tier: str = "Unlimited",
        audience: Collection[str] = (),
        leeway: float = 30.0,
    ) -> None:
        self.name = next(iter(names))  # the first: the one logs and throttle keys use
        self.names = frozenset(names)
        self.algorithms = frozenset(algorithms)
        self.static = static  # a public key object, for every kid
        self.source = source
        self.own = own
        self.validate_subscription = validate_subscription or own
        self.default_tier = default_tier
        self.audience = frozenset(audience)
        self.leeway = leeway

    @classmethod
    def own_key(cls, key: Any, name: str) -> KeyIssuer:
        """This instance, signing with ``key`` (private or public: its public half verifies)."""
        public = key.public_key() if hasattr(key, "public_key") else key
        return cls((name, DEFAULT_ISSUER), (algorithm_for(public),), static=public, own=True)

    @classmethod
    def trusted(cls, cfg: TrustedIssuerConfig, index: int) -> KeyIssuer:
        where = f"api_keys.trusted_issuers[{index}]"
        static = None
        source = None
        algorithms: Collection[str] = cfg.algorithms
        if cfg.certificate is not None:
            static = _certificate_key(cfg.certificate, f"{where}.certificate")
            algorithms = [a for a in cfg.algorithms if _serves(static, a)]
            if not algorithms:
                raise ConfigError(
                    f"{where}.algorithms", f"none of them can be verified with the key of {cfg.certificate}"
                )
        else:
            source = JWKSource(
                cfg.algorithms,
                url=cfg.jwks_url,
                file=cfg.jwks_file,
                refresh_interval=cfg.jwks_refresh_interval,
                timeout=cfg.fetch_timeout,
                name=cfg.name,
                setting=f"{where}.jwks_file",
            )
        return cls(
            (cfg.name,),
            algorithms,
            static=static,
            source=source,
            validate_subscription=cfg.validate_subscription,
            default_tier=cfg.default_tier,
            audience=cfg.audience,
            leeway=cfg.leeway,
        )

    @property
    def generation(self) -> int:
        return self.source.generation if self.source is not None else 0

    async def keys(self, kid: str | None, alg: str) -> list[Any]:
        """The keys that may verify a key with this ``kid`` and ``alg`` (none for another algorithm)."""
        if alg not in self.algorithms:
            return []
        if self.static is not None:
            return [self.static]
        assert self.source is not None
        return await self.source.lookup(kid, alg)

    async def start(self) -> None:
        if self.source is not None:
            await self.source.start()

    async def aclose(self) -> None:
        if self.source is not None:
            await self.source.aclose()


def _serves(key: Any, alg: str) -> bool:
    if alg not in ALGORITHMS:
        return False
    if isinstance(key, rsa.RSAPublicKey):
        return alg.startswith(("RS", "PS"))
    if isinstance(key, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
        return alg == "EdDSA"
    if isinstance(key, ec.EllipticCurvePublicKey):
        try:
            return algorithm_for(key) == alg
        except ValueError:
            return False
    return False


def _certificate_key(path: Path, setting: str) -> Any:
    """The public key of the certificate (PEM or DER) at ``path``."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(setting, f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        cert = x509.load_pem_x509_certificate(data) if b"-----BEGIN" in data else x509.load_der_x509_certificate(data)
        key = cert.public_key()
        algorithm_for(key)
    except ValueError as exc:
        raise ConfigError(setting, f"{path} is not a usable certificate: {exc}") from None
    return key

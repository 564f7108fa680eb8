"""`MutualTLSMiddleware`: mutual SSL on its own, without a configuration file.

    app.add_middleware(
        MutualTLSMiddleware,
        truststore=["certs/ca.pem"],
        certificates=[("partner-a", "certs/partner-a.pem", "Gold")],
        trusted_proxies=["127.0.0.1/32"],
    )

With ``certificates``, only they (exact, or issued by a registered CA) pass,
plus any certificate the truststore validates if ``truststore_tier`` names the
tier to give it; without ``certificates``, the truststore decides (at
``truststore_tier``, "Unlimited" by default).

It resolves and validates the client certificate (from the TLS connection or a
trusted proxy's header), leaves the outcome in ``scope["asgi_apim.certificate"]``
and, with ``required=True`` (the default), answers 401 unless the certificate
is accepted, setting ``scope["user"]``/``scope["auth"]`` when it is. With
``required=False`` it only records the outcome, for a later stage to decide.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from starlette.types import ASGIApp, Receive, Scope, Send

from asgi_apim._keys import CERTIFICATE
from asgi_apim._lifecycle import BackgroundTasks
from asgi_apim.certs.formats import FORMATS
from asgi_apim.certs.resolver import CertificateResolver, certificate_error, certificate_principal
from asgi_apim.certs.truststore import TrustReloader
from asgi_apim.config import ApiConfig, CertificateRegistration, MutualSSLConfig
from asgi_apim.errors import reject
from asgi_apim.identity import set_identity

STANDALONE_API = "default"


class MutualTLSMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        truststore: Sequence[str | os.PathLike[str]] = (),
        certificates: Sequence[tuple[str, str | os.PathLike[str], str]] = (),
        crl: Sequence[str | os.PathLike[str]] = (),
        truststore_password: str | None = None,
        certificate_header: str = "X-WSO2-CLIENT-CERTIFICATE",
        header_format: str = "auto",
        trusted_proxies: Sequence[str] = (),
        enable_client_validation: bool = False,
        enable_certificate_chain_validation: bool = True,
        reload_interval: float = 10.0,
        required: bool = True,
        truststore_tier: str | None = None,
        resolver: CertificateResolver | None = None,
    ) -> None:
        self.app = app
        self.required = required
        if header_format not in FORMATS:
            raise ValueError(f"header_format must be one of {', '.join(FORMATS)}")
        if resolver is None:
            mutual_ssl = MutualSSLConfig(
                certificate_header=certificate_header.lower(),
                header_format=header_format,
                trusted_proxies=tuple(trusted_proxies),
                enable_client_validation=enable_client_validation,
                enable_certificate_chain_validation=enable_certificate_chain_validation,
                truststore=tuple(Path(p) for p in truststore),
                truststore_password=truststore_password,
                crl=tuple(Path(p) for p in crl),
                reload_interval=reload_interval,
            )
            regs = tuple(
                CertificateRegistration(alias=a, certificate=Path(p), tier=t, api=STANDALONE_API)
                for a, p, t in certificates
            )
            if not regs and truststore_tier is None:
                truststore_tier = "Unlimited"  # nothing registered: the truststore is the whole policy
            api = ApiConfig(name=STANDALONE_API, context="/", certificates=regs, truststore_tier=truststore_tier)
            resolver = CertificateResolver(TrustReloader(mutual_ssl, (api,)), mutual_ssl)
        self.resolver = resolver
        self.background = BackgroundTasks(resolver.trust.run)  # truststore and CRL reloads

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            if scope["type"] == "lifespan":
                receive = self.background.lifespan(receive)
            await self.app(scope, receive, send)
            return
        if not self.background.started:
            self.background.ensure_started()
        outcome = self.resolver.resolve(scope)
        scope[CERTIFICATE] = outcome
        if self.required:
            principal = certificate_principal(outcome, STANDALONE_API)
            if principal is None:
                await reject(scope, send, certificate_error(outcome, STANDALONE_API), STANDALONE_API)
                return
            set_identity(scope, principal)
        await self.app(scope, receive, send)

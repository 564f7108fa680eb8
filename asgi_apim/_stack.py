"""`protect()`: the whole stack around any ASGI app, built once from a configuration.

A request flows one way: routing -> certificate (source, trust gate,
validation) -> application policy -> throttling -> app, in one middleware,
`APISecurityMiddleware`, composed by plain arguments from the owners of each
decision: the `CertificateResolver`, the `ApplicationSecurity` and the
`Limiter` (docs/architecture.md). Everything is parsed and loaded here, once;
background work (truststore, CRL and registry reloads, JWKS refreshes) starts
with the app's lifespan or its first request.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from starlette.types import ASGIApp

from asgi_apim import metrics
from asgi_apim._lifecycle import BackgroundTasks
from asgi_apim.auth import issuer
from asgi_apim.auth.application import ApplicationSecurity
from asgi_apim.auth.policy import APISecurityMiddleware
from asgi_apim.certs.resolver import CertificateResolver
from asgi_apim.certs.truststore import TrustMaterial, TrustReloader
from asgi_apim.config import Config, load_config
from asgi_apim.edge import APICORSMiddleware, InterceptorMiddleware, TransportMiddleware
from asgi_apim.errors import AlreadyProtected
from asgi_apim.metrics import Accepted
from asgi_apim.registry import admin, feed_for
from asgi_apim.registry.feed import log_configured_expiry
from asgi_apim.routing import Router
from asgi_apim.throttling.limiter import Limiter

TrustListener = Callable[[TrustMaterial], None]

logger = logging.getLogger("asgi_apim.certs")


def _share_secrets(app: Any, config: Config) -> None:
    state = getattr(app, "state", None)
    if state is not None:
        state.secrets = config.secrets
        state.apim_config = config


def _document(app: Any, config: Config) -> None:
    """A FastAPI app's OpenAPI document (and so ``/docs``) shows how each API is secured."""
    try:
        from fastapi import FastAPI
    except ImportError:  # FastAPI is optional
        return
    if isinstance(app, FastAPI) and not getattr(app, "_asgi_apim_openapi", False):
        from asgi_apim.auth.fastapi import install_openapi

        install_openapi(app, config)
        app._asgi_apim_openapi = True  # type: ignore[attr-defined]  # a marker on the FastAPI app: its OpenAPI document is ours once


def check_unprotected(app: Any) -> None:
    """Raise `AlreadyProtected` when ``app`` already has the stack around it: `protect()`'s
    result (seen through middlewares that keep the next app as ``.app``, as Starlette's do) or
    an app with `APISecurityMiddleware` in its ``user_middleware`` (``app.add_middleware``)."""
    for _ in range(64):  # a chain of middlewares; a cycle of ``.app`` would never end
        if app is None:
            return
        if isinstance(app, APISecurityMiddleware):
            raise AlreadyProtected()
        if any(getattr(m, "cls", None) is APISecurityMiddleware for m in getattr(app, "user_middleware", ())):
            raise AlreadyProtected()
        app = getattr(app, "app", None)


def _log_trusted_proxies(config: Config) -> None:
    """Say once, when a stack that reads certificates is built, whose certificate header is believed."""
    mutual_ssl = config.mutual_ssl
    peers = ", ".join(mutual_ssl.trusted_proxies) or "no peer"
    logger.info("certificate header %s believed from: %s", mutual_ssl.certificate_header.upper(), peers)


def protect(
    app: ASGIApp,
    config: Config | str | os.PathLike[str] = "deployment.toml",
    *,
    explain: bool = False,
    trust_listeners: Sequence[TrustListener] = (),
    credentials: ApplicationSecurity | None = None,
) -> ASGIApp:
    """Wrap ``app`` with mutual TLS, application security and throttling as ``config`` says.

    ``trust_listeners`` are told of every new truststore generation (a TLS server that trusts
    what the configuration trusts: `asgi-apim serve`). ``credentials``: the application security
    to decide with, when the caller shares it (the gateway asks it where credentials are read);
    built from ``config`` otherwise."""
    check_unprotected(app)
    cfg = config if isinstance(config, Config) else load_config(config)
    _share_secrets(app, cfg)
    _document(app, cfg)
    background = BackgroundTasks()
    resolver = None
    feed = None
    if cfg.uses_mutual_ssl or cfg.mutual_ssl.truststore:
        feed = feed_for(cfg)
        trust = TrustReloader(cfg.mutual_ssl, cfg.apis, registry=feed)
        background.add(trust.run)
        background.add(partial(log_configured_expiry, trust, cfg.registry.expiry_warning_days))
        for listener in trust_listeners:
            trust.subscribe(listener)
        resolver = CertificateResolver(trust, cfg.mutual_ssl)
        _log_trusted_proxies(cfg)
    if credentials is None:
        credentials = ApplicationSecurity.from_config(cfg)
    accepted: Accepted | None = {} if cfg.metrics.enabled else None
    background.add(credentials.start)
    router = Router.from_config(cfg)
    interceptors = InterceptorMiddleware(app, router=router)  # after authentication and throttling
    secured: ASGIApp = APISecurityMiddleware(
        interceptors if interceptors else app,
        router=router,
        credentials=credentials,
        resolver=resolver,
        limiter=Limiter.from_config(cfg),
        background=background,
        debug_headers=cfg.debug_headers,
        explain=explain,
        accepted=accepted,
    )
    if any(api.cors is not None for api in cfg.apis):  # a preflight is answered before authentication
        secured = APICORSMiddleware(secured, router=router)
    if any("http" not in api.transports for api in cfg.apis):
        secured = TransportMiddleware(secured, router=router)
    return metrics.mount(admin.mount(issuer.mount(secured, cfg, resolver), cfg), cfg, accepted, resolver, feed)

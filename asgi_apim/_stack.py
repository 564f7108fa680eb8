"""`protect()`: the whole stack around any ASGI app, built once from a configuration.

A request flows one way: routing -> certificate (source, trust gate,
validation) -> application policy -> throttling -> app. Everything is parsed
and loaded here, once; background work (truststore, CRL and registry reloads,
JWKS refreshes) starts with the app's lifespan or its first request.

Two middlewares, one layer: `APISecurityMiddleware` wraps `ThrottlingMiddleware`
and, seeing it, calls its `admit_now` directly with the caller and route it
has just decided, so a request whose counts are in memory crosses a single
middleware coroutine (the throttling one still serves lifespan and, used on
its own, every request).
"""

from __future__ import annotations

import os
from typing import Any

from starlette.types import ASGIApp

from asgi_apim._lifecycle import BackgroundTasks
from asgi_apim.auth.policy import APISecurityMiddleware
from asgi_apim.certs.resolver import CertificateResolver
from asgi_apim.certs.truststore import TrustReloader
from asgi_apim.config import Config, load_config
from asgi_apim.registry import admin, feed_for
from asgi_apim.routing import Router
from asgi_apim.server.tls import live_trust, uses_mutual_ssl
from asgi_apim.throttling import ThrottlingMiddleware


def _authenticators(config: Config) -> dict[str, Any]:
    needed = {
        s
        for api in config.apis
        for sec in [api.security, *(r.security for r in api.resources if r.security)]
        for s in sec.application
    }
    if not needed:
        return {}
    from asgi_apim.auth.base import build_authenticators

    return build_authenticators(config)


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
        app._asgi_apim_openapi = True  # type: ignore[attr-defined]


def protect(
    app: ASGIApp, config: Config | str | os.PathLike[str] = "deployment.toml", *, explain: bool = False
) -> ASGIApp:
    """Wrap ``app`` with mutual TLS, application security and throttling as ``config`` says."""
    cfg = config if isinstance(config, Config) else load_config(config)
    _share_secrets(app, cfg)
    _document(app, cfg)
    background = BackgroundTasks()
    resolver = None
    if uses_mutual_ssl(cfg) or cfg.mutual_ssl.truststore:
        trust = TrustReloader(cfg.mutual_ssl, cfg.apis, registry=feed_for(cfg))
        background.add(trust.run)
        trust.subscribe(live_trust.update)
        resolver = CertificateResolver(trust, cfg.mutual_ssl)
    authenticators = _authenticators(cfg)
    for auth in authenticators.values():
        background.add(auth.start)
    stack = ThrottlingMiddleware.from_config(app, cfg)
    secured = APISecurityMiddleware(
        stack,
        router=Router.from_config(cfg),
        authenticators=authenticators,
        resolver=resolver,
        background=background,
        debug_headers=cfg.debug_headers,
        explain=explain,
    )
    return admin.mount(secured, cfg)

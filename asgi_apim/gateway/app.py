"""`gateway()`: the micro-gateway as one ASGI app, built once from a configuration.

    GatewayHealth( protect( GatewayProxy ) )

`asgi_apim.protect` wraps the proxy exactly as it wraps a user's app, so
authentication, throttling and routing are the same. In front of it,
`GatewayHealth` answers two paths itself, with no credential and no throttling:

* ``GET /health``: ``{"status": "UP"}``, 200, whenever the process serves (no backend is called);
* ``GET /health/ready``: each API's endpoints and their suspension state, and under ``resources``
  those of each resource with endpoints of its own (keyed ``"GET /pets/{id}"``); 200 when every API
  and every such resource has an available production endpoint, else 503. Backend addresses are not
  shown (the log has them).
"""

from __future__ import annotations

import json
import os
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from asgi_apim._stack import protect
from asgi_apim.auth.application import ApplicationSecurity
from asgi_apim.config import ApiConfig, Config, load_config
from asgi_apim.errors import ConfigError
from asgi_apim.gateway.proxy import GatewayProxy, SSLContexts
from asgi_apim.gateway.ssl_profiles import SSLProfiles
from asgi_apim.gateway.websocket import install

HEALTH = "/health"
READY = "/health/ready"


class GatewayHealth:
    def __init__(self, app: ASGIApp, proxy: GatewayProxy) -> None:
        self.app = app
        self.proxy = proxy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in (HEALTH, READY) or scope["method"] not in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        status, doc = (200, {"status": "UP"}) if scope["path"] == HEALTH else self.ready()
        body = json.dumps(doc, separators=(",", ":")).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"cache-control", b"no-store"),
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})

    def ready(self) -> tuple[int, dict[str, Any]]:
        apis: dict[str, Any] = {}
        ready = True
        for target in self.proxy.targets:
            entry: dict[str, Any] = {
                "type": target.production.type,
                "ready": target.production.ready(),
                "production": target.production.state(),
            }
            if target.sandbox is not None:
                entry["sandbox"] = target.sandbox.state()
            if target.resources:
                entry["resources"] = resources = {}
                for r in target.resources:
                    own: dict[str, Any] = {}
                    if r.production is not None:
                        own |= {"type": r.production.type, "ready": r.production.ready()}
                        own["production"] = r.production.state()
                        entry["ready"] = entry["ready"] and own["ready"]
                    if r.sandbox is not None:
                        own["sandbox"] = r.sandbox.state()
                    resources[r.label] = own
            ready = ready and entry["ready"]
            apis[target.name] = entry
        return (200 if ready else 503), {"status": "UP" if ready else "DEGRADED", "apis": apis}


def gateway(
    config: Config | str | os.PathLike[str] = "deployment.toml", *, ssl_contexts: SSLContexts | None = None
) -> ASGIApp:
    """The secured, throttled gateway of ``config``: every API with a ``backend`` is proxied."""
    cfg = config if isinstance(config, Config) else load_config(config)
    if not any(api.backend is not None for api in cfg.apis):
        raise ConfigError("apis", "no API has a backend: the gateway would have nothing to serve")
    for api in cfg.apis:
        for context in api.contexts:
            if context == HEALTH or context.startswith(HEALTH + "/"):
                raise ConfigError(f"apis[{api.name}].context", f"{context} is the gateway's own {HEALTH}")
    profiles = None
    if ssl_contexts is None and any(u.startswith("https:") for a in cfg.apis for u in _urls(a)):
        profiles = SSLProfiles(cfg)
        ssl_contexts = profiles.context_for
    credentials = ApplicationSecurity.from_config(cfg)  # one: the stack authenticates, the proxy asks where
    proxy = install(GatewayProxy(cfg, ssl_contexts=ssl_contexts, credentials=credentials))
    if profiles is not None:
        proxy.jobs.append(profiles.run)
    return GatewayHealth(protect(proxy, cfg, credentials=credentials), proxy)


def _urls(api: ApiConfig) -> list[str]:
    backends = [api.gateway.backend, api.gateway.sandbox_backend]
    backends += [b for r in api.resources for b in (r.backend, r.sandbox_backend)]
    return [u for b in backends if b is not None for u in b.urls]

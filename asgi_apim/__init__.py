"""asgi-apim: WSO2 API Manager's gateway security as pure ASGI middleware.

    from asgi_apim import protect
    app = protect(app, config="deployment.toml")

or compose the middlewares yourself with ``app.add_middleware(...)``:
`MutualTLSMiddleware`, `APISecurityMiddleware`, `ThrottlingMiddleware`, and per API
`TransportMiddleware`, `APICORSMiddleware` (in front) and `InterceptorMiddleware` (behind).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from asgi_apim.config import Config, load_config, load_secrets
from asgi_apim.errors import APIMError, ConfigError, CryptoError, RequestError
from asgi_apim.identity import Principal

if TYPE_CHECKING:  # imported on first use, by __getattr__
    from asgi_apim._stack import protect
    from asgi_apim.auth.policy import APISecurityMiddleware
    from asgi_apim.certs.middleware import MutualTLSMiddleware
    from asgi_apim.edge import (
        APICORSMiddleware,
        InterceptorContext,
        InterceptorMiddleware,
        ResponseContext,
        TransportMiddleware,
    )
    from asgi_apim.routing import Router
    from asgi_apim.throttling import ThrottlingMiddleware

_LAZY = {
    "protect": "asgi_apim._stack",
    "MutualTLSMiddleware": "asgi_apim.certs.middleware",
    "APISecurityMiddleware": "asgi_apim.auth.policy",
    "ThrottlingMiddleware": "asgi_apim.throttling",
    "Router": "asgi_apim.routing",
    "APICORSMiddleware": "asgi_apim.edge",
    "InterceptorMiddleware": "asgi_apim.edge",
    "TransportMiddleware": "asgi_apim.edge",
    "InterceptorContext": "asgi_apim.edge",
    "ResponseContext": "asgi_apim.edge",
}

__all__ = [
    "APICORSMiddleware",
    "APIMError",
    "APISecurityMiddleware",
    "Config",
    "ConfigError",
    "CryptoError",
    "InterceptorContext",
    "InterceptorMiddleware",
    "MutualTLSMiddleware",
    "Principal",
    "RequestError",
    "ResponseContext",
    "Router",
    "ThrottlingMiddleware",
    "TransportMiddleware",
    "load_config",
    "load_secrets",
    "protect",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'asgi_apim' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)

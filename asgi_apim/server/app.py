"""The application factory ``asgi-apim serve`` gives uvicorn.

uvicorn imports ``asgi_apim.server.app:create_app`` in every worker process and
calls it (``factory=True``); the app and the configuration it wraps are named
by two environment variables that ``serve`` sets before starting uvicorn, so
the same import string works with ``--workers N``.
"""

from __future__ import annotations

import gc
import os
import sys

from starlette.types import ASGIApp

from asgi_apim._stack import protect
from asgi_apim.errors import APIMError
from asgi_apim.server.configs import config_for
from asgi_apim.server.tls import live_trust

APP_ENV = "ASGI_APIM_APP"
CONFIG_ENV = "ASGI_APIM_CONFIG"
APP_DIR_ENV = "ASGI_APIM_APP_DIR"
GATEWAY_ENV = "ASGI_APIM_GATEWAY"  # set by asgi-apim gateway: the app is the gateway of the configuration
FACTORY = "asgi_apim.server.app:create_app"
GC_THRESHOLD = (20_000, 50, 100)  # gc.set_threshold of a serving process

__all__ = ["APP_DIR_ENV", "APP_ENV", "CONFIG_ENV", "FACTORY", "GC_THRESHOLD", "config_for", "create_app", "import_app"]


def import_app(target: str) -> ASGIApp:
    """``MODULE:APP`` imported; one clear `APIMError` when it cannot be."""
    from uvicorn.importer import ImportFromStringError, import_from_string

    try:
        app: ASGIApp = import_from_string(target)
    except (ImportFromStringError, ImportError) as exc:
        raise APIMError(f"cannot import {target!r}: {exc}") from None
    return app


def create_app() -> ASGIApp:
    """``protect(MODULE:APP, config)`` as named by the environment, or the gateway. What is built
    here lives as long as the process: it is moved out of the garbage collector's sight
    (`gc.freeze`), so that the collections the requests cause never walk it again; and the
    youngest generation is collected every `GC_THRESHOLD` allocations rather than Python's
    700, so that a request's short-lived objects (freed by reference counting anyway) do not
    start a collection every few requests."""
    app = _create_app()
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLD)
    return app


def _create_app() -> ASGIApp:
    if os.environ.get(GATEWAY_ENV) == "1" and CONFIG_ENV in os.environ:
        from asgi_apim.gateway.app import gateway

        return gateway(config_for(os.environ[CONFIG_ENV]))
    try:
        target, config_path = os.environ[APP_ENV], os.environ[CONFIG_ENV]
    except KeyError as exc:
        raise RuntimeError(f"{FACTORY} needs the environment variable {exc.args[0]} (set by asgi-apim serve)") from None
    app_dir = os.environ.get(APP_DIR_ENV)
    if app_dir is not None and app_dir not in sys.path:
        sys.path.insert(0, app_dir)
    return protect(import_app(target), config=config_for(config_path), trust_listeners=[live_trust.update])

"""The application factory ``asgi-apim serve`` gives uvicorn.

uvicorn imports ``asgi_apim.server.app:create_app`` in every worker process and
calls it (``factory=True``); the app and the configuration it wraps are named
by two environment variables that ``serve`` sets before starting uvicorn, so
the same import string works with ``--workers N``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from starlette.types import ASGIApp

from asgi_apim.config import Config, load_config
from asgi_apim.errors import APIMError

APP_ENV = "ASGI_APIM_APP"
CONFIG_ENV = "ASGI_APIM_CONFIG"
APP_DIR_ENV = "ASGI_APIM_APP_DIR"
GATEWAY_ENV = "ASGI_APIM_GATEWAY"  # set by asgi-apim gateway: the app is the gateway of the configuration
FACTORY = "asgi_apim.server.app:create_app"

_configs: dict[str, Config] = {}


def config_for(path: str | os.PathLike[str]) -> Config:
    """The configuration at ``path``, loaded once per process."""
    key = str(Path(path).resolve())
    config = _configs.get(key)
    if config is None:
        config = _configs[key] = load_config(key)
    return config


def import_app(target: str) -> ASGIApp:
    """``MODULE:APP`` imported; one clear `APIMError` when it cannot be."""
    from uvicorn.importer import ImportFromStringError, import_from_string

    try:
        return import_from_string(target)
    except (ImportFromStringError, ImportError) as exc:
        raise APIMError(f"cannot import {target!r}: {exc}") from None


def create_app() -> ASGIApp:
    """``protect(MODULE:APP, config)`` as named by the environment, or the gateway."""
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
    from asgi_apim import protect

    return protect(import_app(target), config=config_for(config_path))

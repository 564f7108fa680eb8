"""``asgi-apim serve MODULE:APP --config FILE``: the app, protected, on uvicorn.

The configuration is loaded first, so a bad key stops start-up with one line.
uvicorn then runs our protocol classes (the ASGI TLS extension and the real
socket peer), after a self-test proves that this uvicorn still carries them,
with an ``ssl_context_factory`` whose handshake trusts what the configuration
trusts (see `asgi_apim.server.tls`). The app is built by the factory in
`asgi_apim.server.app`, once per worker.
"""

from __future__ import annotations

import argparse
import copy
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import uvicorn
from starlette.types import ASGIApp
from uvicorn.supervisors import Multiprocess

from asgi_apim._redact import query_credentials
from asgi_apim.config import Config
from asgi_apim.errors import APIMError, UsageError
from asgi_apim.server.app import (
    APP_DIR_ENV,
    APP_ENV,
    CONFIG_ENV,
    FACTORY,
    GATEWAY_ENV,
    config_for,
    create_app,
    import_app,
)
from asgi_apim.server.handshake import HandshakeConfig, HandshakeServer
from asgi_apim.server.preflight import (
    PreflightError,
    check_tls_files,
    per_worker_limits,
    unreachable_certificate_apis,
)
from asgi_apim.server.protocols import tls_protocols
from asgi_apim.server.selftest import run_selftest
from asgi_apim.server.tls import TrustContextFactory, default_cert_reqs

logger = logging.getLogger("asgi_apim.server")


def _protocols(http: str, ws: str) -> tuple[type, type | None]:
    try:
        return tls_protocols(http, ws)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    except ImportError as exc:
        raise APIMError(f"--http {http} / --ws {ws}: {exc}") from None


class QueryCredentials(logging.Filter):
    """uvicorn's access log line without the credentials of its query string (an API key sent as
    ``?apikey=``, a token as ``?access_token=``): each such value is logged as ``***``."""

    def __init__(self, names: Sequence[str] = ()) -> None:
        super().__init__()
        self._pattern = query_credentials(names)

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args  # uvicorn's: client address, method, path with query, HTTP version, status
        if isinstance(args, tuple) and len(args) == 5 and isinstance(args[2], str) and "=" in args[2]:
            record.args = (*args[:2], self._pattern.sub(r"\1***", args[2]), *args[3:])
        return True


def log_config(level: str, query_param: str = "apikey") -> dict[str, Any]:
    """uvicorn's logging configuration, with asgi-apim's loggers on its handler and the access
    log's query credentials hidden (in every worker)."""
    config = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    config["loggers"]["asgi_apim"] = {"handlers": ["default"], "level": level.upper(), "propagate": False}
    for noisy in ("httpx", "httpcore"):  # httpx logs every request's URL, credentials and all, at INFO
        config["loggers"][noisy] = {"level": "WARNING"}
    config.setdefault("filters", {})["query_credentials"] = {"()": QueryCredentials, "names": [query_param]}
    config["handlers"]["access"]["filters"] = ["query_credentials"]
    return config


def _checked(ns: argparse.Namespace, config: Config) -> tuple[bool, int]:
    """Whether TLS is on and the ``--ssl-cert-reqs`` in force, after every start-up check (made once)."""
    done = getattr(ns, "_preflight", None)
    if done is not None:
        return done  # type: ignore[no-any-return]  # set by this function, a (bool, int)
    if ns.log_level.lower() not in uvicorn.config.LOG_LEVELS:
        raise UsageError(f"--log-level {ns.log_level!r}: one of {', '.join(uvicorn.config.LOG_LEVELS)}")
    try:
        check_tls_files(ns.ssl_certfile, ns.ssl_keyfile, ns.ssl_keyfile_password, ns.ssl_ca_certs)
    except PreflightError as exc:
        raise UsageError(str(exc)) from None
    refusal = per_worker_limits(config, ns.workers, getattr(ns, "allow_per_worker_limits", False))
    if refusal is not None:
        raise UsageError(refusal)
    tls = bool(ns.ssl_certfile)
    cert_reqs = ns.ssl_cert_reqs if ns.ssl_cert_reqs is not None else default_cert_reqs(config, tls)
    warning = unreachable_certificate_apis(config, tls, cert_reqs)
    if warning is not None:
        logger.warning(warning)
    ns._preflight = (tls, cert_reqs)
    return tls, cert_reqs


def run_server(
    app: ASGIApp | str, ns: argparse.Namespace, config: Config, config_path: str, *, factory: bool = False
) -> int:
    """Run ``app`` (an ASGI app, or an import string; ``factory``: it names a factory) on uvicorn with
    the server options of ``ns`` (`asgi_apim.cli` adds them to ``serve`` and ``gateway``); the exit code.
    ``config`` is the loaded configuration at ``config_path``, whose trust the TLS handshake follows."""
    tls, cert_reqs = _checked(ns, config)
    if ns.workers and ns.workers > 1 and not isinstance(app, str):
        raise UsageError(f"--workers {ns.workers} needs the app as an import string")
    http, ws = _protocols(ns.http, ns.ws)
    run_selftest(http, ws)
    if tls:
        logger.info("TLS on; client certificates %s", ("not requested", "optional", "required")[cert_reqs])
    uv_config = HandshakeConfig(
        app,
        factory=factory,
        header_timeout=getattr(ns, "header_timeout", None),
        host=ns.host,
        port=ns.port,
        uds=ns.uds,
        workers=ns.workers,
        http=http,
        ws=ws or "none",
        ssl_certfile=ns.ssl_certfile,
        ssl_keyfile=ns.ssl_keyfile,
        ssl_keyfile_password=ns.ssl_keyfile_password,
        ssl_ca_certs=ns.ssl_ca_certs,
        ssl_cert_reqs=cert_reqs,
        ssl_ciphers=ns.ssl_ciphers,
        ssl_context_factory=TrustContextFactory(config_path) if tls else None,
        proxy_headers=ns.proxy_headers,
        forwarded_allow_ips=ns.forwarded_allow_ips,
        root_path=ns.root_path,
        limit_concurrency=getattr(ns, "limit_concurrency", None),
        timeout_keep_alive=getattr(ns, "timeout_keep_alive", 5),
        log_level=ns.log_level,
        log_config=log_config(ns.log_level, config.api_keys.query_param),
        access_log=ns.access_log,
        lifespan=ns.lifespan,
    )
    return _run(uv_config)


def _run(uv_config: HandshakeConfig) -> int:
    """`uvicorn.run` from a built Config: one worker in this process, or a supervisor and N workers."""
    server = HandshakeServer(config=uv_config)
    try:
        if uv_config.workers > 1:
            Multiprocess(uv_config, sockets=[uv_config.bind_socket()]).run()
        else:
            server.run()
    except KeyboardInterrupt:
        pass
    except SystemExit as exc:  # uvicorn exits 3 when start-up fails; it has said why
        return 0 if exc.code in (0, None) else 1
    finally:
        if uv_config.uds and os.path.exists(uv_config.uds):
            os.remove(uv_config.uds)
    if not server.started and uv_config.workers == 1:
        return 1
    return 0


def serve(ns: argparse.Namespace) -> int:
    """Run ``ns.app`` behind the stack of ``ns.config`` on uvicorn (``ns.gateway``: the gateway); the exit code."""
    gateway = getattr(ns, "gateway", False)
    if not gateway and ":" not in ns.app:
        raise UsageError(f"{ns.app!r}: expected MODULE:APP")
    config_path = str(Path(ns.config).resolve())
    config = config_for(config_path)
    app_dir = str(Path(getattr(ns, "app_dir", None) or ".").resolve())
    if gateway:
        os.environ.update({GATEWAY_ENV: "1", CONFIG_ENV: config_path})
        os.environ.pop(APP_ENV, None)
    else:
        os.environ.update({APP_ENV: ns.app, CONFIG_ENV: config_path, APP_DIR_ENV: app_dir})
        os.environ.pop(GATEWAY_ENV, None)
    if app_dir not in sys.path:
        sys.path.insert(0, app_dir)
    _checked(ns, config)  # before the app is imported: a bad flag is one line, not an import's side effects
    if gateway or (ns.workers and ns.workers > 1):
        create_app()  # fail here, once, rather than in every worker
    else:
        import_app(ns.app)
    return run_server(FACTORY, ns, config, config_path, factory=True)

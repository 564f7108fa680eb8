"""gunicorn worker classes: the maintained uvicorn worker, running our protocol classes.

``gunicorn -k asgi_apim.server.worker:UvicornWorker --certfile server.pem
--keyfile server.key --ca-certs ca.pem --cert-reqs 1 app:app`` serves a
``protect()``ed app with the ASGI TLS extension (the client certificate chain)
and the real socket peer in every scope, exactly as ``asgi-apim serve`` does.
gunicorn's TLS options reach uvicorn unchanged (``uvicorn-worker`` maps them);
``--keep-alive`` is uvicorn's keep-alive timeout. As under ``asgi-apim serve``,
the worker's protocol runs the TLS handshake, so a refused one is logged on
``asgi_apim.tls`` (gunicorn's error log). The request-head deadline is
``ASGI_APIM_HEADER_TIMEOUT`` seconds (default 10; see
`asgi_apim.server.deadline`).

Each gunicorn worker is a process with its own memory: throttle with a shared
storage (``[throttling] storage = "redis://..."``), or every limit is counted
once per worker.

Needs the ``gunicorn`` extra: ``pip install 'asgi-apim[gunicorn]'``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from uvicorn_worker import UvicornWorker as _UvicornWorker  # type: ignore[import-untyped]  # no py.typed

from asgi_apim.server.handshake import take_over_handshake
from asgi_apim.server.protocols import tls_protocols
from asgi_apim.server.ratelog import install_accept_log


def _protocol_kwargs(http: str, ws: str) -> dict[str, Any]:
    http_cls, ws_cls = tls_protocols(http, ws)
    return {"http": http_cls, "ws": ws_cls if ws_cls is not None else "none"}


class UvicornWorker(_UvicornWorker):  # type: ignore[misc]  # its base is untyped
    """``uvicorn_worker.UvicornWorker`` (uvloop when installed, httptools or h11 as uvicorn picks)
    with the ASGI TLS extension."""

    CONFIG_KWARGS: dict[str, Any] = {"loop": "auto", **_protocol_kwargs("auto", "auto")}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        ours = logging.getLogger("asgi_apim")  # on gunicorn's error log, as uvicorn-worker does for uvicorn's
        ours.handlers = self.log.error_log.handlers
        ours.setLevel(self.log.error_log.level)
        ours.propagate = False

    async def _serve(self) -> None:
        install_accept_log(asyncio.get_running_loop())
        # uvicorn's Server would load the config itself; loading it first lets our protocol run the
        # TLS handshake (refusals logged on asgi_apim.tls, the handshake within the header timeout)
        self.config.app = self.wsgi
        self.config.load()
        take_over_handshake(self.config)
        await super()._serve()


class UvicornH11Worker(UvicornWorker):
    """The pure-Python variant: asyncio's loop and h11, as ``uvicorn_worker.UvicornH11Worker``."""

    CONFIG_KWARGS: dict[str, Any] = {"loop": "asyncio", **_protocol_kwargs("h11", "auto")}

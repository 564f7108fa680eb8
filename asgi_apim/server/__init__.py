"""Running an app protected on uvicorn: ``asgi-apim serve``, plain uvicorn, gunicorn.

protocols  uvicorn protocol classes adding the ASGI TLS extension and the socket peer
deadline   the request-head deadline (``--header-timeout``) of the HTTP protocol classes
handshake  the TLS handshake run by the protocol under ``serve``, refusals logged
ratelog    rate-limited log lines; ``accept()`` failures folded into one a second
tls        the server's SSLContext: trusts what the configuration trusts, kept current
preflight  the start-up checks of ``serve`` (TLS files, per-worker limits, unreachable APIs)
selftest   start-up proof that the installed uvicorn still carries the extension
app        the per-worker application factory uvicorn imports
run        the ``serve`` command; `run.run_server` runs any app with serve's options
worker     gunicorn worker classes (the ``gunicorn`` extra)
"""

from __future__ import annotations

import importlib


def __getattr__(name: str) -> object:
    """gunicorn splits ``-k asgi_apim.server.worker:UvicornWorker`` on dots and asks this package
    for ``worker:UvicornWorker``: answer it, so that uvicorn's colon spelling works as well as
    gunicorn's dotted one (``asgi_apim.server.worker.UvicornWorker``)."""
    module, colon, attr = name.partition(":")
    if colon and module == "worker":
        return getattr(importlib.import_module(f"{__name__}.worker"), attr)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

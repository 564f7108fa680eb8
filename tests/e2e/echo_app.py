"""httpbin (a well-known third-party WSGI app that echoes the request it receives) as an ASGI app."""

from __future__ import annotations

import httpbin
from a2wsgi import WSGIMiddleware

app = WSGIMiddleware(httpbin.app)  # type: ignore[arg-type]  # a2wsgi's WSGI app type is narrower than Flask's

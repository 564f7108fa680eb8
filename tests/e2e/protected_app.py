"""An app that protects itself at import, with the configuration named by ``PROTECTED_APP_CONFIG``:
what ``uvicorn`` or ``gunicorn`` run directly, and what ``asgi-apim serve`` must refuse to wrap again."""

from __future__ import annotations

import os

from asgi_apim import protect
from tests.e2e.whoami_app import app as whoami

app = protect(whoami, os.environ["PROTECTED_APP_CONFIG"])

"""``protect()`` around the whoami app, for plain uvicorn and gunicorn in the end-to-end tests:
the configuration file is named by ``E2E_APIM_CONFIG``."""

from __future__ import annotations

import os

from asgi_apim import protect
from tests.e2e.whoami_app import app as whoami

app = protect(whoami, config=os.environ["E2E_APIM_CONFIG"])

"""The gateway and ``forward_credentials``: the client's credential reaches the backend only when the
API forwards credentials and presents none of its own (``[apis.backend_security]``)."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from asgi_apim.gateway.proxy import GatewayProxy
from tests.gateway.servers import uvicorn_server
from tests.gateway.test_proxy import Echo, api, call, config, principal

SECURITY = '[apis.security]\napplication = ["api_key", "oauth2", "basic"]\n'
BACKEND_BASIC = '[apis.backend_security]\ntype = "basic"\nusername = "svc"\npassword = "svc-password"\n'
CLIENT = {"apikey": "client-key", "authorization": "Bearer client-token", "x-wso2-client-certificate": "forged"}


@pytest.mark.parametrize(
    ("forward", "backend_security", "reaches"),
    [(False, False, False), (True, False, True), (True, True, False), (False, True, False)],
    ids=["default", "forwarded", "forwarded-but-backend-security", "backend-security"],
)
async def test_the_clients_credential_and_the_backend(
    tmp_path: Path, forward: bool, backend_security: bool, reaches: bool
) -> None:
    echo = Echo()
    async with uvicorn_server(echo) as b:
        extra = f"forward_credentials = {str(forward).lower()}\n{SECURITY}"
        extra += BACKEND_BASIC if backend_security else ""
        proxy = GatewayProxy(config(tmp_path, api("a", f'"http://127.0.0.1:{b.port}"', extra)))
        r = await call(proxy, "GET", "/a/x?apikey=client-key&keep=1", principal(), headers=CLIENT)
        doc = r.json()
        await proxy.aclose()
    headers = doc["headers"]
    assert ("apikey=client-key" in doc["query"]) is reaches and "keep=1" in doc["query"]
    assert (headers.get("apikey") == "client-key") is reaches
    assert (headers.get("authorization") == "Bearer client-token") is reaches
    assert "x-wso2-client-certificate" not in headers  # never the client's own: forward_client_certificate sends one
    if backend_security:
        assert headers["authorization"] == "Basic " + base64.b64encode(b"svc:svc-password").decode()

"""The gateway and ``forward_credentials``: the client's credential reaches the backend only when the
API forwards credentials and presents none of its own (``[apis.backend_security]``)."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from starlette.types import Scope

from asgi_apim.auth.application import ApplicationSecurity
from asgi_apim.auth.base import Authenticator
from asgi_apim.config import ApiConfig
from asgi_apim.gateway.proxy import GatewayProxy
from asgi_apim.identity import Principal
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


class PartnerKeys:
    """An authenticator of its own: its credential lives in a header and a query parameter that
    the gateway's code names nowhere."""

    scheme = "api_key"
    challenge = 'PartnerKey realm="test"'
    header: bytes | None = b"x-partner-key"
    query_param: str | None = "partner"

    def credential(self, scope: Scope) -> str | None:
        return None

    async def authenticate(self, credential: str, api: ApiConfig, scope: Scope) -> Principal:
        raise AssertionError("not called")

    def strip(self, scope: Scope) -> None:
        return None

    async def start(self) -> None:
        return None

    async def aclose(self) -> None:
        return None


async def test_where_credentials_are_read_is_the_authenticators_answer(tmp_path: Path) -> None:
    """The proxy drops what the stack's authenticators declare (`ApplicationSecurity.locations`),
    not a list of its own: a scheme read from a new place stops at the gateway with no change to it."""
    echo = Echo()
    async with uvicorn_server(echo) as b:
        cfg = config(tmp_path, api("a", f'"http://127.0.0.1:{b.port}"', '[apis.security]\napplication = ["api_key"]\n'))
        security = ApplicationSecurity({"api_key": PartnerKeys()})
        assert isinstance(security.authenticators["api_key"], Authenticator)
        proxy = GatewayProxy(cfg, credentials=security)
        headers = {"x-partner-key": "p-secret", "apikey": "not-read-here"}
        r = await call(proxy, "GET", "/a/x?partner=p-secret&apikey=kept&keep=1", principal(), headers=headers)
        doc = r.json()
        await proxy.aclose()
    assert "x-partner-key" not in doc["headers"] and "partner=" not in doc["query"]
    assert doc["headers"]["apikey"] == "not-read-here" and doc["query"] == "apikey=kept&keep=1"

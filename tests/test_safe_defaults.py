"""No implicit trust, and loud misconfiguration: the certificate header is believed from nobody
unless listed (and start-up says from whom), an app is protected once, and a TLS server that
never fills in the ASGI TLS extension is named once."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from starlette.applications import Starlette
from starlette.middleware.cors import CORSMiddleware

from asgi_apim import MutualTLSMiddleware, protect
from asgi_apim.auth.policy import APISecurityMiddleware
from asgi_apim.certs import resolver as resolver_module
from asgi_apim.certs.pki import Issued, issue_client, make_ca
from asgi_apim.config import MutualSSLConfig, load_config
from asgi_apim.errors import AlreadyProtected, ConfigError
from asgi_apim.routing import Router
from tests.asgi import call, call_scope, make_scope

CONFIG = """
[encryption]
key = "{key}"

[mutual_ssl]
truststore = ["ca.pem"]
{trusted}

[[apis]]
name = "pets"
context = "/pets"
[apis.security]
mutual_ssl = "mandatory"
[[apis.certificates]]
alias = "partners"
certificate = "ca.pem"
"""


async def ok(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def _write(tmp: Path, trusted: str = "") -> tuple[Path, Issued]:
    ca = make_ca("defaults CA")
    ca.write(tmp / "ca.pem")
    (tmp / "deployment.toml").write_text(CONFIG.format(key="58" * 32, trusted=trusted))
    return tmp / "deployment.toml", issue_client(ca, "partner")


def _header(client: Issued) -> list[tuple[str, str]]:
    return [("X-WSO2-CLIENT-CERTIFICATE", quote(client.cert_pem().decode(), safe=""))]


def test_no_peer_is_trusted_by_default(tmp_path: Path) -> None:
    assert MutualSSLConfig().trusted_proxies == ()
    config, _ = _write(tmp_path)
    assert load_config(config).mutual_ssl.trusted_proxies == ()


async def test_the_header_from_loopback_is_not_believed_unless_listed(tmp_path: Path) -> None:
    config, client = _write(tmp_path)
    refused = await call(protect(ok, config), "GET", "/pets/1", _header(client), client=("127.0.0.1", 4000))
    assert (refused.status, refused.json()["code"]) == (401, 900902)
    config, client = _write(tmp_path, 'trusted_proxies = ["127.0.0.1/32"]')
    accepted = await call(protect(ok, config), "GET", "/pets/1", _header(client), client=("127.0.0.1", 4000))
    assert accepted.status == 200


async def test_the_middleware_believes_no_peer_by_default(tmp_path: Path) -> None:
    ca = make_ca("middleware CA")
    ca.write(tmp_path / "ca.pem")
    client = issue_client(ca, "partner")
    mw = MutualTLSMiddleware(ok, truststore=[tmp_path / "ca.pem"])
    assert (await call(mw, "GET", "/", _header(client))).status == 401
    mw = MutualTLSMiddleware(ok, truststore=[tmp_path / "ca.pem"], trusted_proxies=["127.0.0.1/32"])
    assert (await call(mw, "GET", "/", _header(client))).status == 200


@pytest.mark.parametrize(
    ("trusted", "said"),
    [
        ("", "certificate header X-WSO2-CLIENT-CERTIFICATE believed from: no peer"),
        (
            'trusted_proxies = ["127.0.0.1/32", "10.0.0.0/8"]',
            "certificate header X-WSO2-CLIENT-CERTIFICATE believed from: 127.0.0.1/32, 10.0.0.0/8",
        ),
    ],
)
def test_start_up_says_once_whom_the_header_is_believed_from(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, trusted: str, said: str
) -> None:
    config, _ = _write(tmp_path, trusted)
    with caplog.at_level(logging.INFO, logger="asgi_apim.certs"):
        protect(ok, config)
    assert [r.getMessage() for r in caplog.records if "believed from" in r.getMessage()] == [said]


def test_protect_refuses_an_app_already_protected(tmp_path: Path) -> None:
    config, _ = _write(tmp_path)
    once = protect(ok, config)
    for twice in (once, CORSMiddleware(once, allow_origins=["*"])):
        with pytest.raises(AlreadyProtected) as refused:
            protect(twice, config)
        assert isinstance(refused.value, ConfigError)
        assert "already protect()ed" in str(refused.value) and "\n" not in str(refused.value)
        assert "uvicorn APP --http asgi_apim.server.protocols:HTTPProtocol" in str(refused.value)


def test_protect_refuses_an_app_with_the_security_middleware_added_by_hand(tmp_path: Path) -> None:
    config, _ = _write(tmp_path)
    app = Starlette()
    app.add_middleware(APISecurityMiddleware, router=Router.from_config(load_config(config)))
    with pytest.raises(AlreadyProtected):
        protect(app, config)
    protect(Starlette(), config)  # an app without it is protected as usual


@pytest.fixture
def warned_once() -> Any:
    resolver_module.NO_TLS_EXTENSION.given = False
    yield resolver_module.NO_TLS_EXTENSION
    resolver_module.NO_TLS_EXTENSION.given = False


def _tls_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "without the ASGI TLS extension" in r.getMessage()]


async def test_a_tls_request_without_the_tls_extension_is_warned_about_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, warned_once: Any
) -> None:
    config, _ = _write(tmp_path)
    app = protect(ok, config)
    with caplog.at_level(logging.WARNING, logger="asgi_apim.certs"):
        for _ in range(3):
            assert (await call_scope(app, make_scope("GET", "/pets/1", scheme="https"))).status == 401
    (warning,) = _tls_warnings(caplog)
    for option in (
        "asgi-apim serve",
        "uvicorn APP --http asgi_apim.server.protocols:HTTPProtocol",
        "gunicorn -k asgi_apim.server.worker:UvicornWorker",
        "trusted_proxies",
    ):
        assert option in warning


@pytest.mark.parametrize(
    "scope",
    [
        make_scope("GET", "/pets/1"),  # plain HTTP: nothing to say
        make_scope("GET", "/pets/1", scheme="https", extensions={"tls": {"client_cert_chain": []}}),  # filled in
        make_scope("GET", "/pets/1", [("X-WSO2-CLIENT-CERTIFICATE", "x")], scheme="https"),  # a header: a proxy's
        make_scope("GET", "/health", scheme="https"),  # no route that reads certificates
    ],
    ids=["http", "extension", "header", "public"],
)
async def test_no_warning_where_the_server_is_not_at_fault(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, warned_once: Any, scope: dict[str, Any]
) -> None:
    config, _ = _write(tmp_path)
    with caplog.at_level(logging.WARNING, logger="asgi_apim.certs"):
        await call_scope(protect(ok, config), dict(scope, headers=list(scope["headers"])))
    assert _tls_warnings(caplog) == []
    assert not warned_once.given

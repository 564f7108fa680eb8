"""A real nginx terminating TLS in front of ``asgi-apim serve`` (plain HTTP on loopback).

nginx asks for a client certificate without judging it (``optional_no_ca``) and
forwards it URL-encoded in X-WSO2-CLIENT-CERTIFICATE, from 127.0.0.2, the only
trusted proxy. The same header sent straight to asgi-apim from 127.0.0.1, even
with an X-Forwarded-For naming the proxy, is not believed.
"""

from __future__ import annotations

import json
import os
import ssl
import subprocess
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from tests.e2e.conftest import PKI, Served, Servers, free_port

pytestmark = pytest.mark.e2e

PROXY_ADDR = "127.0.0.2"

CONFIG = """
public_paths = ["/health"]

[encryption]
key = "{key}"

[mutual_ssl]
certificate_header = "X-WSO2-CLIENT-CERTIFICATE"
trusted_proxies = ["{proxy}/32"]
truststore = ["{ca}"]

[[apis]]
name = "pets"
context = "/pets"

[apis.security]
mutual_ssl = "mandatory"

[[apis.certificates]]
alias = "partner-a"
certificate = "{ca}"
tier = "Gold"
"""

SERVER_BLOCK = """
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_verify_client optional_no_ca;
        location / {{
            proxy_pass http://127.0.0.1:{upstream};
            proxy_bind {proxy};
            proxy_set_header Host $host;
            proxy_set_header X-WSO2-CLIENT-CERTIFICATE $ssl_client_escaped_cert;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        }}
    }}
"""


class Stack:
    def __init__(self, app: Served, edge_port: int, pki: PKI) -> None:
        self.app = app
        self.edge = f"https://127.0.0.1:{edge_port}"
        self.pki = pki


@pytest.fixture(scope="module")
def stack(module_servers: Servers, module_pki: PKI) -> Stack:
    config = module_servers.tmp / "deployment.toml"
    config.write_text(CONFIG.format(key=os.urandom(32).hex(), proxy=PROXY_ADDR, ca=module_pki.path("ca.pem")))
    app = module_servers.serve("example_app.main:app", config)
    edge_port = free_port()
    module_servers.nginx(
        SERVER_BLOCK.format(
            port=edge_port,
            cert=module_pki.path("server.pem"),
            key=module_pki.path("server.key"),
            upstream=app.port,
            proxy=PROXY_ADDR,
        ),
        edge_port,
    )
    return Stack(app, edge_port, module_pki)


def _edge(stack: Stack, cert: str | None, headers: dict[str, str] | None = None) -> httpx.Response:
    with httpx.Client(verify=stack.pki.client_context(cert), timeout=10) as client:
        return client.get(stack.edge + "/pets/whoami", headers=headers)


def _escaped(pem: bytes) -> str:
    """What nginx's $ssl_client_escaped_cert holds."""
    return quote(pem.decode(), safe="")


def test_curl_through_nginx_with_client_certificate(stack: Stack) -> None:
    pki = stack.pki
    out = subprocess.run(
        [
            "curl",
            "-sS",
            "--max-time",
            "10",
            "--cacert",
            str(pki.path("ca.pem")),
            "--cert",
            str(pki.path("client.pem")),
            "--key",
            str(pki.path("client.key")),
            stack.edge + "/pets/whoami",
        ],
        capture_output=True,
        check=True,
        timeout=20,
    )
    body = json.loads(out.stdout)
    assert body["method"] == "mutual_ssl" and (body["alias"], body["tier"]) == ("partner-a", "Gold")
    assert body["subject"] == pki.client.cert.subject.rfc4514_string()


def test_httpx_through_nginx(stack: Stack) -> None:
    response = _edge(stack, "client")
    assert response.status_code == 200, response.text
    assert response.json()["alias"] == "partner-a"


def test_no_certificate_through_nginx_is_missing_credentials(stack: Stack) -> None:
    response = _edge(stack, None)
    assert response.status_code == 401 and response.json()["code"] == 900902
    assert response.headers["content-type"] == "application/problem+json"


def test_unregistered_certificate_through_nginx_is_refused(stack: Stack) -> None:
    response = _edge(stack, "stranger")  # optional_no_ca lets it through nginx; asgi-apim judges it
    assert response.status_code == 401 and response.json()["code"] == 900901


def test_client_cannot_smuggle_the_header_through_nginx(stack: Stack) -> None:
    response = _edge(stack, None, {"X-WSO2-CLIENT-CERTIFICATE": _escaped(stack.pki.client.cert_pem())})
    assert response.status_code == 401 and response.json()["code"] == 900902


def test_header_sent_directly_from_an_untrusted_peer_is_not_believed(stack: Stack) -> None:
    spoof = {"X-WSO2-CLIENT-CERTIFICATE": _escaped(stack.pki.client.cert_pem()), "X-Forwarded-For": PROXY_ADDR}
    response = httpx.get(stack.app.url + "/pets/whoami", headers=spoof, timeout=10)  # from 127.0.0.1
    assert response.status_code == 401 and response.json()["code"] == 900902
    assert "untrusted peer 127.0.0.1" in stack.app.log()


def test_same_header_from_the_trusted_proxy_address_is_believed(stack: Stack) -> None:
    transport = httpx.HTTPTransport(local_address=PROXY_ADDR)
    with httpx.Client(transport=transport, timeout=10) as client:
        response = client.get(
            stack.app.url + "/pets/whoami", headers={"X-WSO2-CLIENT-CERTIFICATE": _escaped(stack.pki.client.cert_pem())}
        )
    assert response.status_code == 200 and response.json()["alias"] == "partner-a"


def test_nginx_is_really_in_the_path(stack: Stack, tmp_path: Path) -> None:
    with pytest.raises(httpx.ConnectError):  # asgi-apim itself speaks plain HTTP only
        httpx.get(f"https://127.0.0.1:{stack.app.port}/health", verify=ssl.create_default_context(), timeout=5)
    assert _edge(stack, "client").headers["server"].startswith("nginx")


RELAY_CONFIG = CONFIG.replace(
    'trusted_proxies = ["{proxy}/32"]', 'trusted_proxies = ["{proxy}/32"]\nenable_client_validation = true'
)

# the relay model: nginx connects over TLS, with a certificate of its own
RELAY_BLOCK = SERVER_BLOCK.replace("proxy_pass http://", "proxy_pass https://").replace(
    "proxy_bind {proxy};",
    "proxy_bind {proxy};\n            proxy_ssl_certificate {proxy_cert};"
    "\n            proxy_ssl_certificate_key {proxy_key};"
    "\n            proxy_ssl_session_reuse off;",
)


@pytest.fixture(scope="module")
def relay(module_servers: Servers, module_pki: PKI) -> Stack:
    """The relay model: nginx connects over TLS with a certificate of its own, issued by the CA the API trusts."""
    from asgi_apim.certs.pki import issue_client

    issue_client(module_pki.ca, "nginx relay").write(module_pki.path("relay.pem"), module_pki.path("relay.key"))
    config = module_servers.tmp / "relay.toml"
    config.write_text(RELAY_CONFIG.format(key=os.urandom(32).hex(), proxy=PROXY_ADDR, ca=module_pki.path("ca.pem")))
    app = module_servers.serve("example_app.main:app", config, tls_pki=module_pki)
    edge_port = free_port()
    module_servers.nginx(
        RELAY_BLOCK.format(
            port=edge_port,
            cert=module_pki.path("server.pem"),
            key=module_pki.path("server.key"),
            upstream=app.port,
            proxy=PROXY_ADDR,
            proxy_cert=module_pki.path("relay.pem"),
            proxy_key=module_pki.path("relay.key"),
        ),
        edge_port,
    )
    return Stack(app, edge_port, module_pki)


def test_in_the_relay_model_the_client_s_certificate_is_the_header_s(relay: Stack) -> None:
    response = _edge(relay, "client")
    assert response.status_code == 200, response.text
    assert response.json()["subject"] == relay.pki.client.cert.subject.rfc4514_string()


def test_in_the_relay_model_a_client_without_a_certificate_is_not_the_proxy(relay: Stack) -> None:
    # nginx sends no header for it, and connects with its own certificate: that one is the proxy's
    response = _edge(relay, None)
    assert response.status_code == 401 and response.json()["code"] == 900902, response.text

"""``asgi-apim serve`` over real TLS on loopback, called with curl and httpx client certificates."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from websockets.sync.client import connect

from asgi_apim.certs.pki import Issued, issue_client, make_ca, make_crl
from tests.e2e.conftest import PKI, Served, Servers, wait_until

pytestmark = pytest.mark.e2e

CONFIG = """
public_paths = ["/health", "/tls"]

[encryption]
key = "{key}"

[mutual_ssl]
truststore = ["truststore.pem"]
crl = ["crl.pem"]
reload_interval = 0.2

[[apis]]
name = "pets"
context = "/pets"
{truststore_tier}
[apis.security]
mutual_ssl = "mandatory"
{certificates}"""

REGISTRATIONS = """
[[apis.certificates]]
alias = "partner-a"
certificate = "{ca}"
tier = "Gold"
"""


class Setup:
    """The PKI, a partner CA nobody trusts yet, and three configurations: the API
    with a registration (``config``), without one but with ``truststore_tier``
    (``open_config``: any certificate the truststore validates) and with neither
    (``closed_config``: no certificate passes)."""

    def __init__(self, tmp: Path, pki: PKI) -> None:
        self.tmp = tmp
        self.pki = pki
        self.ca_b = make_ca("partner-b CA")
        self.client_b = issue_client(self.ca_b, "partner-b client")
        self.write_client("client-b", self.client_b)
        (tmp / "truststore.pem").write_bytes(pki.ca.cert_pem())
        (tmp / "crl.pem").write_bytes(make_crl(pki.ca).public_bytes(Encoding.PEM))
        key = os.urandom(32).hex()
        self.config = tmp / "deployment.toml"
        registrations = REGISTRATIONS.format(ca=pki.path("ca.pem"))
        self.config.write_text(CONFIG.format(key=key, certificates=registrations, truststore_tier=""))
        self.open_config = tmp / "open.toml"
        self.open_config.write_text(
            CONFIG.format(key=key, certificates="", truststore_tier='truststore_tier = "Unlimited"')
        )
        self.closed_config = tmp / "closed.toml"
        self.closed_config.write_text(CONFIG.format(key=key, certificates="", truststore_tier=""))

    def write_client(self, name: str, issued: Issued) -> None:
        issued.write(self.pki.path(f"{name}.pem"), self.pki.path(f"{name}.key"))


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory, module_pki: PKI) -> Setup:
    return Setup(tmp_path_factory.mktemp("shared"), module_pki)


@pytest.fixture(scope="module")
def pets(module_servers: Servers, shared: Setup) -> Served:
    """One server for the tests that change no trust file, or only for their own certificate."""
    return module_servers.serve("example_app.main:app", shared.config, tls_pki=shared.pki)


@pytest.fixture
def setup(tmp_path: Path, pki: PKI) -> Setup:
    return Setup(tmp_path, pki)


def _curl(
    served: Served, pki: PKI, path: str, cert: str | None = "client", *extra: str
) -> tuple[int, dict[str, str], Any]:
    argv = ["curl", "-sS", "-i", "--max-time", "10", "--cacert", str(pki.path("ca.pem")), *extra]
    if cert:
        argv += ["--cert", str(pki.path(f"{cert}.pem")), "--key", str(pki.path(f"{cert}.key"))]
    out = subprocess.run([*argv, served.url + path], capture_output=True, check=True, timeout=20).stdout.decode()
    head, _, body = out.replace("\r\n", "\n").partition("\n\n")
    status_line, *lines = head.split("\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, json.loads(body)


def _get(served: Served, ctx: ssl.SSLContext, path: str = "/pets/whoami") -> httpx.Response:
    with httpx.Client(verify=ctx, timeout=10) as client:
        return client.get(served.url + path)


def _status(served: Served, ctx: ssl.SSLContext, path: str = "/pets/whoami") -> int | str:
    """The status, or "handshake" when the TLS connection was refused."""
    try:
        return _get(served, ctx, path).status_code
    except (httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError):
        return "handshake"


def test_curl_with_client_certificate(pets: Served, shared: Setup) -> None:
    status, headers, body = _curl(pets, shared.pki, "/pets/whoami")
    assert status == 200, body
    assert body["authenticated"] is True and body["method"] == "mutual_ssl"
    assert (body["alias"], body["tier"], body["api"]) == ("partner-a", "Gold", "pets")
    assert body["subject"] == shared.pki.client.cert.subject.rfc4514_string()


def test_httpx_with_client_certificate(pets: Served, shared: Setup) -> None:
    response = _get(pets, shared.pki.client_context("client"))
    assert response.status_code == 200, response.text
    assert response.json()["method"] == "mutual_ssl" and response.json()["alias"] == "partner-a"
    assert _get(pets, shared.pki.client_context("client"), "/pets/1").json()["name"] == "Rex"


def test_no_certificate_is_401_missing_credentials(pets: Served, shared: Setup) -> None:
    status, headers, body = _curl(pets, shared.pki, "/pets/whoami", cert=None)
    assert status == 401
    assert headers["content-type"] == "application/problem+json" and "www-authenticate" in headers
    assert body["code"] == 900902 and body["status"] == 401
    assert _get(pets, shared.pki.client_context(None), "/health").json() == {"status": "ok"}


@pytest.mark.parametrize("path", ["/health/../pets/whoami", "/health/%2e%2e/pets/whoami", "/health/./x"])
def test_a_path_with_dot_segments_is_refused(pets: Served, shared: Setup, path: str) -> None:
    status, headers, body = _curl(pets, shared.pki, path, None, "--path-as-is")  # sent as written
    assert (status, body["code"]) == (400, 900900)
    assert headers["content-type"] == "application/problem+json"


def test_the_access_log_hides_credentials_in_the_query(pets: Served, shared: Setup) -> None:
    _curl(pets, shared.pki, "/health?apikey=AK-secret-value&access_token=TOK-secret-value&page=2", None)
    deadline = time.monotonic() + 5
    while "/health?apikey" not in pets.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    log = pets.log()
    assert "/health?apikey=***&access_token=***&page=2" in log
    assert "secret-value" not in log


def test_unregistered_certificate_from_another_ca_is_refused(pets: Served, shared: Setup) -> None:
    assert _status(pets, shared.pki.client_context("stranger")) in ("handshake", 401)
    assert _status(pets, shared.pki.client_context("client")) == 200  # the server is still fine


def test_new_ca_in_the_truststore_is_trusted_by_handshake_and_app(serve: Callable[..., Served], setup: Setup) -> None:
    served = serve("example_app.main:app", setup.open_config, tls_pki=setup.pki)
    ctx = setup.pki.client_context("client-b")
    assert _status(served, ctx) == "handshake"  # its CA is nobody's anchor yet
    assert _status(served, setup.pki.client_context("client")) == 200
    truststore = setup.tmp / "truststore.pem"
    truststore.write_bytes(truststore.read_bytes() + setup.ca_b.cert_pem())
    assert wait_until(lambda: _status(served, ctx) == 200, timeout=15), served.log()
    body = _get(served, ctx).json()
    assert body["method"] == "mutual_ssl" and body["subject"] == setup.client_b.cert.subject.rfc4514_string()
    assert served.log().count("TLS handshake now trusts 1 new certificate(s)") == 2  # at start-up, then ca_b


def test_api_without_registrations_or_truststore_tier_refuses_every_certificate(
    serve: Callable[..., Served], setup: Setup
) -> None:
    served = serve("example_app.main:app", setup.closed_config, tls_pki=setup.pki)
    refused = _get(served, setup.pki.client_context("client"))  # the handshake trusts it; the API does not
    assert refused.status_code == 401 and refused.json()["code"] == 900901, refused.text
    assert refused.json()["detail"] == "certificate is not registered for API 'pets'"
    assert "API 'pets' accepts no client certificate" in served.log()
    assert _get(served, setup.pki.client_context(None), "/health").json() == {"status": "ok"}


def test_crl_written_under_the_running_server_revokes(pets: Served, shared: Setup) -> None:
    revocable = issue_client(shared.pki.ca, "soon revoked")
    shared.write_client("revocable", revocable)
    ctx = shared.pki.client_context("revocable")
    assert _status(pets, ctx) == 200
    (shared.tmp / "crl.pem").write_bytes(
        make_crl(shared.pki.ca, [revocable.cert.serial_number]).public_bytes(Encoding.PEM)
    )
    assert wait_until(lambda: _status(pets, ctx) == 401, timeout=15), pets.log()
    refused = _get(pets, ctx)
    assert refused.headers["content-type"] == "application/problem+json" and refused.json()["code"] == 900901
    assert _status(pets, shared.pki.client_context("client")) == 200  # others are not revoked


def test_websocket_and_http_scopes_carry_the_tls_extension(serve: Callable[..., Served], setup: Setup) -> None:
    served = serve("tests.e2e.tls_echo_app:app", setup.config, tls_pki=setup.pki)
    ctx = setup.pki.client_context("client")
    with connect(f"wss://{served.host}:{served.port}/tls/ws", ssl=ctx, open_timeout=10) as ws:
        facts = json.loads(ws.recv(timeout=10))
    http_facts = _get(served, ctx, "/tls/http").json()
    for facts_, kind in ((facts, "websocket"), (http_facts, "http")):
        assert facts_["type"] == kind
        tls = facts_["tls"]
        assert ssl.PEM_cert_to_DER_cert(tls["client_cert_chain"][0]) == setup.pki.client.der()
        assert tls["client_cert_name"] == setup.pki.client.cert.subject.rfc4514_string()
        assert tls["tls_version"] in (0x0303, 0x0304) and isinstance(tls["cipher_suite"], int)
        assert ssl.PEM_cert_to_DER_cert(tls["server_cert"]) == setup.pki.server.der()
        assert facts_["peer"][0] == "127.0.0.1"
    anonymous = _get(served, setup.pki.client_context(None), "/tls/http").json()
    assert anonymous["tls"]["client_cert_chain"] == [] and anonymous["tls"]["client_cert_name"] is None


def test_every_worker_gets_the_extension_and_live_trust(serve: Callable[..., Served], setup: Setup) -> None:
    served = serve(
        "example_app.main:app", setup.open_config, "--workers", "2", "--allow-per-worker-limits", tls_pki=setup.pki
    )
    assert wait_until(lambda: _status(served, setup.pki.client_context("client")) == 200, timeout=20), served.log()
    assert wait_until(lambda: served.log().count("Application startup complete") == 2, timeout=20), served.log()
    ctx = setup.pki.client_context("client-b")
    assert _status(served, ctx) == "handshake"
    truststore = setup.tmp / "truststore.pem"
    truststore.write_bytes(truststore.read_bytes() + setup.ca_b.cert_pem())
    trusted = "TLS handshake now trusts 1 new certificate(s)"  # each worker: at start-up, then ca_b
    assert wait_until(lambda: served.log().count(trusted) == 4, timeout=15), served.log()
    for _ in range(8):  # new connections, spread over both workers by the kernel
        assert _status(served, ctx) == 200, served.log()
    assert _status(served, setup.pki.client_context(None)) == 401

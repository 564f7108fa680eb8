"""The deployment examples of docs/deployment/, run as written: a real nginx and a real
HAProxy, configured from those very files (only paths and ports replaced), in front of
``asgi-apim serve``. Each proxy asks for a client certificate without refusing it, so
asgi-apim answers every refusal with its 401 and the reason; nginx's own refusal of an
expired certificate (its HTML 400) goes to asgi-apim through ``error_page 495``."""

from __future__ import annotations

import base64
import datetime as dt
import os
import shutil
import signal
import subprocess
from pathlib import Path

import httpx
import pytest

from asgi_apim.certs.pki import issue_client, make_ca
from tests.e2e.conftest import LOOPBACK, PKI, Process, Served, Servers, free_port, nginx_binary

pytestmark = pytest.mark.e2e

DEPLOYMENT = Path(__file__).resolve().parents[2] / "docs" / "deployment"

CONFIG = """
public_paths = ["/health"]

[encryption]
key = "{key}"

[mutual_ssl]
certificate_header = "{header}"
header_format = "{fmt}"
trusted_proxies = ["127.0.0.1/32"]
truststore = ["{ca}"]

[[apis]]
name = "pets"
context = "/pets"

[apis.security]
mutual_ssl = "mandatory"

[[apis.certificates]]
alias = "partners"
certificate = "{ca}"
tier = "Gold"
"""

NOW = dt.datetime.now(dt.UTC)
# certificate -> (status, what the answer says)
EXPECTED = {
    "client": (200, '"alias":"partners"'),
    "stranger": (401, "not issued by a trusted CA"),
    "selfsigned": (401, "not issued by a trusted CA"),
    "noeku": (401, "lacks the clientAuth extended key usage"),
    "expired": (401, '"detail":"expired"'),
    "future": (401, "not yet valid"),
    "ca-as-client": (401, "is a CA certificate, not a client certificate"),
}


def more_certificates(pki: PKI) -> None:
    issue_client(None, "selfsigned").write(pki.path("selfsigned.pem"), pki.path("selfsigned.key"))
    issue_client(pki.ca, "noeku", eku=None).write(pki.path("noeku.pem"), pki.path("noeku.key"))
    expired = issue_client(
        pki.ca, "expired", not_before=NOW - dt.timedelta(days=60), not_after=NOW - dt.timedelta(days=30)
    )
    expired.write(pki.path("expired.pem"), pki.path("expired.key"))
    future = issue_client(
        pki.ca, "future", not_before=NOW + dt.timedelta(days=3), not_after=NOW + dt.timedelta(days=30)
    )
    future.write(pki.path("future.pem"), pki.path("future.key"))
    make_ca("a CA as client").write(pki.path("ca-as-client.pem"), pki.path("ca-as-client.key"))


def serve(servers: Servers, pki: PKI, header: str, fmt: str) -> Served:
    config = servers.tmp / f"deployment-{fmt}.toml"
    config.write_text(CONFIG.format(key=os.urandom(32).hex(), header=header, fmt=fmt, ca=pki.path("ca.pem")))
    return servers.serve("example_app.main:app", config)


def from_example(name: str, replacements: dict[str, str]) -> str:
    text = (DEPLOYMENT / name).read_text()
    for old, new in replacements.items():
        assert old in text, f"docs/deployment/{name} no longer holds {old!r}"
        text = text.replace(old, new)
    return text


def get(url: str, pki: PKI, cert: str | None, headers: dict[str, str] | None = None) -> httpx.Response:
    with httpx.Client(verify=pki.client_context(cert or ""), timeout=10) as client:
        return client.get(url, headers=headers)


def check_every_certificate(url: str, pki: PKI) -> None:
    for cert, (status, says) in EXPECTED.items():
        r = get(url, pki, cert)
        assert (r.status_code, says in r.text) == (status, True), (cert, r.status_code, r.text)
        if status == 401:
            assert r.headers["content-type"] == "application/problem+json"
    r = get(url, pki, None)
    assert r.status_code == 401 and r.json()["code"] == 900902


def test_nginx_example(servers: Servers, pki: PKI) -> None:
    more_certificates(pki)
    app = serve(servers, pki, "X-WSO2-CLIENT-CERTIFICATE", "url_pem")
    port = free_port()
    body = from_example(
        "nginx.conf",
        {
            "listen 443 ssl;": f"listen {LOOPBACK}:{port} ssl;",
            "/etc/asgi-apim/tls/server.pem": str(pki.path("server.pem")),
            "/etc/asgi-apim/tls/server.key": str(pki.path("server.key")),
            "server 127.0.0.1:8000;": f"server 127.0.0.1:{app.port};",
        },
    )
    nginx = servers.nginx(body, port)
    tested = subprocess.run(
        [
            nginx_binary(),
            "-t",
            "-p",
            str(Path(nginx.log_path).parent),
            "-c",
            str(Path(nginx.log_path).parent / "nginx.conf"),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert tested.returncode == 0 and "test is successful" in tested.stderr, tested.stderr
    url = f"https://{LOOPBACK}:{port}/pets/whoami"
    check_every_certificate(url, pki)
    # a DELETE refused by nginx's own certificate check reaches asgi-apim as a DELETE
    with httpx.Client(verify=pki.client_context("expired"), timeout=10) as client:
        r = client.delete(f"https://{LOOPBACK}:{port}/pets/1")
    assert r.status_code == 401 and r.json()["detail"] == "expired"


def test_nginx_without_error_page_answers_its_own_400_for_an_expired_certificate(servers: Servers, pki: PKI) -> None:
    """What the README warns of: optional_no_ca alone lets nginx refuse an expired certificate itself."""
    more_certificates(pki)
    app = serve(servers, pki, "X-WSO2-CLIENT-CERTIFICATE", "url_pem")
    port = free_port()
    body = from_example(
        "nginx.conf",
        {
            "listen 443 ssl;": f"listen {LOOPBACK}:{port} ssl;",
            "/etc/asgi-apim/tls/server.pem": str(pki.path("server.pem")),
            "/etc/asgi-apim/tls/server.key": str(pki.path("server.key")),
            "server 127.0.0.1:8000;": f"server 127.0.0.1:{app.port};",
            "error_page 495 496 = @asgi_apim;": "",
        },
    )
    servers.nginx(body, port)
    r = get(f"https://{LOOPBACK}:{port}/pets/whoami", pki, "expired")
    assert r.status_code == 400 and "The SSL certificate error" in r.text and "text/html" in r.headers["content-type"]
    assert get(f"https://{LOOPBACK}:{port}/pets/whoami", pki, "stranger").status_code == 401


def haproxy_binary() -> str:
    found = shutil.which("haproxy") or ("/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None)
    if found is None:
        raise RuntimeError("haproxy is not installed (apt-get install haproxy)")
    return found


def test_haproxy_example(servers: Servers, pki: PKI) -> None:
    more_certificates(pki)
    app = serve(servers, pki, "X-SSL-Client-Cert", "base64_der")
    port = free_port()
    bundle = pki.path("server-with-key.pem")
    bundle.write_bytes(pki.path("server.pem").read_bytes() + pki.path("server.key").read_bytes())
    cfg = servers.tmp / "haproxy.cfg"
    cfg.write_text(
        from_example(
            "haproxy.cfg",
            {
                "bind :443 ssl": f"bind {LOOPBACK}:{port} ssl",
                "/etc/asgi-apim/tls/server-with-key.pem": str(bundle),
                "/etc/asgi-apim/tls/clients-ca.pem": str(pki.path("ca.pem")),
                "server app1 127.0.0.1:8000": f"server app1 127.0.0.1:{app.port}",
            },
        )
    )
    checked = subprocess.run([haproxy_binary(), "-c", "-f", str(cfg)], capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    proc = Process("haproxy", [haproxy_binary(), "-db", "-f", str(cfg)], servers.tmp / "haproxy.log", servers.tmp)
    servers.started.append((proc, signal.SIGTERM))
    proc.wait_listening(LOOPBACK, port)
    url = f"https://{LOOPBACK}:{port}/pets/whoami"
    check_every_certificate(url, pki)
    # a header the client wrote itself is dropped by HAProxy
    forged = subprocess.run(
        ["openssl", "x509", "-in", str(pki.path("client.pem")), "-outform", "der"], capture_output=True, check=True
    ).stdout
    r = get(url, pki, None, headers={"X-SSL-Client-Cert": base64.b64encode(forged).decode()})
    assert r.status_code == 401 and r.json()["code"] == 900902

"""Certificates made the way most users make them, with the ``openssl`` command line,
through ``asgi-apim serve`` over real TLS and called with curl.

OpenSSL's ``req -x509`` CA carries no keyUsage extension (its v3_ca section),
which the Web PKI defaults of cryptography's verifier demand: these tests keep
such CAs, their intermediates and their CRLs (``openssl ca -gencrl``) working.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Served, Servers

pytestmark = pytest.mark.e2e

CONFIG = """
public_paths = ["/health"]

[encryption]
key = "{key}"

[mutual_ssl]
trusted_proxies = ["127.0.0.1/32"]   # the test client plays the proxy
truststore = ["root.pem"]
crl = ["crl.pem"]
reload_interval = 0.2

[[apis]]
name = "pets"
context = "/pets"

[apis.security]
mutual_ssl = "mandatory"

[[apis.certificates]]
alias = "openssl-partners"
certificate = "root.pem"
tier = "Gold"

[[apis.certificates]]
alias = "pinned"
certificate = "pinned.pem"
tier = "Silver"
"""

CA_CNF = """
[ca]
default_ca = local
[local]
dir = {dir}
database = {dir}/index.txt
new_certs_dir = {dir}
certificate = {dir}/root.pem
private_key = {dir}/root.key
serial = {dir}/serial
crlnumber = {dir}/crlnumber
default_md = sha256
default_crl_days = 7
policy = any
[any]
commonName = supplied
"""


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


class OpensslPKI:
    """root (``req -x509``), an intermediate, clients and a server, all by the openssl CLI."""

    def __init__(self, d: Path) -> None:
        self.dir = d
        (d / "index.txt").write_text("")
        (d / "crlnumber").write_text("01\n")
        (d / "ca.cnf").write_text(CA_CNF.format(dir=d))
        (d / "client.ext").write_text("extendedKeyUsage = clientAuth\n")
        (d / "server-only.ext").write_text("extendedKeyUsage = serverAuth\n")
        (d / "inter.ext").write_text("basicConstraints = critical, CA:TRUE\n")
        (d / "server.ext").write_text("subjectAltName = IP:127.0.0.1, DNS:localhost\nextendedKeyUsage = serverAuth\n")
        openssl(
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "root.key",
            "-out",
            "root.pem",
            "-days",
            "30",
            "-subj",
            "/CN=openssl root",
            cwd=d,
        )
        self.issue("inter", "root", "inter.ext")
        self.issue("server", "root", "server.ext", subject="/CN=localhost")
        # a self-signed client certificate, registered exactly (openssl marks it CA:TRUE)
        openssl(
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "pinned.key",
            "-out",
            "pinned.pem",
            "-days",
            "30",
            "-subj",
            "/CN=pinned",
            cwd=d,
        )
        self.issue("alice", "root", "client.ext")
        self.issue("bob", "inter", "client.ext")
        self.issue("carol", "root", "client.ext")
        self.issue("v1", "root", None)  # no extensions at all: openssl writes an X.509 v1 certificate
        self.issue("serveronly", "root", "server-only.ext")
        (d / "bob-chain.pem").write_bytes((d / "bob.pem").read_bytes() + (d / "inter.pem").read_bytes())
        self.crl()

    def issue(self, name: str, ca: str, ext: str | None, subject: str | None = None) -> None:
        d = self.dir
        openssl(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.csr",
            "-subj",
            subject or f"/CN={name}",
            cwd=d,
        )
        args = [
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            f"{ca}.pem",
            "-CAkey",
            f"{ca}.key",
            "-CAcreateserial",
            "-out",
            f"{name}.pem",
            "-days",
            "10",
        ]
        openssl(*args, *(["-extfile", ext] if ext else []), cwd=d)

    def crl(self) -> None:
        openssl("ca", "-config", "ca.cnf", "-gencrl", "-out", "crl.pem", cwd=self.dir)

    def revoke(self, name: str) -> None:
        openssl("ca", "-config", "ca.cnf", "-revoke", f"{name}.pem", cwd=self.dir)
        self.crl()

    def path(self, name: str) -> Path:
        return self.dir / name


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> OpensslPKI:
    return OpensslPKI(tmp_path_factory.mktemp("openssl"))


@pytest.fixture(scope="module")
def served(module_servers: Servers, pki: OpensslPKI) -> Served:
    config = pki.path("deployment.toml")
    config.write_text(CONFIG.format(key=os.urandom(32).hex()))
    return module_servers.serve("example_app.main:app", config, tls_pki=pki)  # type: ignore[arg-type]


def curl(served: Served, pki: OpensslPKI, cert: str | None, path: str = "/pets/whoami") -> tuple[int, Any]:
    argv = ["curl", "-sS", "--max-time", "10", "--cacert", str(pki.path("root.pem")), "-w", "\n%{http_code}"]
    if cert:
        argv += ["--cert", str(pki.path(f"{cert}.pem")), "--key", str(pki.path(f"{cert.split('-')[0]}.key"))]
    out = subprocess.run([*argv, served.url + path], capture_output=True, check=True, timeout=20).stdout.decode()
    body, _, status = out.rpartition("\n")
    return int(status), json.loads(body)


def test_leaf_of_an_openssl_root_without_key_usage(served: Served, pki: OpensslPKI) -> None:
    status, body = curl(served, pki, "alice")
    assert status == 200, body
    assert (body["method"], body["alias"], body["tier"], body["subject"]) == (
        "mutual_ssl",
        "openssl-partners",
        "Gold",
        "CN=alice",
    )


def test_self_signed_openssl_certificate_registered_exactly(served: Served, pki: OpensslPKI) -> None:
    status, body = curl(served, pki, "pinned")
    assert status == 200, body
    assert (body["alias"], body["tier"], body["subject"]) == ("pinned", "Silver", "CN=pinned")


def test_leaf_of_an_openssl_intermediate_sent_with_its_chain(served: Served, pki: OpensslPKI) -> None:
    status, body = curl(served, pki, "bob-chain")
    assert status == 200, body
    assert body["subject"] == "CN=bob" and body["alias"] == "openssl-partners"


def test_a_v1_certificate_is_refused(served: Served, pki: OpensslPKI) -> None:
    status, body = curl(served, pki, "v1")
    assert (status, body["code"]) == (401, 900901), body
    assert "X509v3" in body["detail"], body


def test_a_server_only_certificate_is_refused(served: Served, pki: OpensslPKI) -> None:
    """OpenSSL itself refuses it in the handshake (unsupported certificate purpose); from a
    trusted proxy's header, the application layer refuses it for the same reason."""
    with pytest.raises(subprocess.CalledProcessError):
        curl(served, pki, "serveronly")
    from urllib.parse import quote

    header = quote(pki.path("serveronly.pem").read_text(), safe="")
    argv = [
        "curl",
        "-sS",
        "--max-time",
        "10",
        "--cacert",
        str(pki.path("root.pem")),
        "-w",
        "\n%{http_code}",
        "-H",
        f"X-WSO2-CLIENT-CERTIFICATE: {header}",
        served.url + "/pets/whoami",
    ]
    out = subprocess.run(argv, capture_output=True, check=True, timeout=20).stdout.decode()
    body, _, status = out.rpartition("\n")
    assert int(status) == 401 and "clientAuth" in json.loads(body)["detail"], body


def test_openssl_crl_revokes_under_the_running_server(served: Served, pki: OpensslPKI) -> None:
    assert curl(served, pki, "carol")[0] == 200
    pki.revoke("carol")
    for _ in range(50):
        status, body = curl(served, pki, "carol")
        if status == 401:
            break
        subprocess.run(["sleep", "0.1"], check=True)
    assert (status, body["code"]) == (401, 900901) and "revoked" in body["detail"], body
    assert curl(served, pki, "alice")[0] == 200  # others unaffected


def test_check_command_agrees(pki: OpensslPKI) -> None:
    config = pki.path("deployment.toml")
    ok = subprocess.run(
        ["asgi-apim", "check", "--config", str(config), str(pki.path("alice.pem"))], capture_output=True, text=True
    )
    assert ok.returncode == 0 and "accepted, alias openssl-partners, tier Gold" in ok.stdout, ok.stdout + ok.stderr
    refused = subprocess.run(
        ["asgi-apim", "check", "--config", str(config), str(pki.path("serveronly.pem"))], capture_output=True, text=True
    )
    assert refused.returncode == 1 and "clientAuth" in refused.stdout, refused.stdout + refused.stderr

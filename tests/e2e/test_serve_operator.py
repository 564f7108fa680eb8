"""What an operator sees from a real ``asgi-apim serve``: refused TLS handshakes logged with
the peer and the reason, TLS flag errors naming the flag and the file, the refusal of
``memory://`` limits under several workers, and the warning for an API whose certificates
cannot arrive."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.x509.oid import ExtendedKeyUsageOID

from asgi_apim.certs.pki import issue_client
from tests.e2e.conftest import PKI, REPO, Served, wait_until

pytestmark = pytest.mark.e2e

MANDATORY = """
public_paths = ["/health"]

[encryption]
key = "{key}"

[mutual_ssl]
truststore = ["{ca}"]
trusted_proxies = []

[[apis]]
name = "pets"
context = "/pets"

[apis.security]
mutual_ssl = "mandatory"

[[apis.certificates]]
alias = "partner"
certificate = "{ca}"
tier = "Gold"
"""


@pytest.fixture
def config(tmp_path: Path, pki: PKI) -> Path:
    path = tmp_path / "deployment.toml"
    path.write_text(MANDATORY.format(key="ef" * 32, ca=pki.path("ca.pem")))
    return path


def _curl(url: str, pki: PKI, *args: str) -> subprocess.CompletedProcess[str]:
    argv = ["curl", "-sS", "--max-time", "10", "--cacert", str(pki.path("ca.pem")), *args, url]
    return subprocess.run(argv, capture_output=True, text=True, timeout=20)


def _write(pki: PKI, name: str, **kwargs: Any) -> tuple[str, str]:
    issue_client(pki.ca, name, **kwargs).write(pki.path(f"{name}.pem"), pki.path(f"{name}.key"))
    return str(pki.path(f"{name}.pem")), str(pki.path(f"{name}.key"))


def test_refused_handshakes_are_logged_with_peer_and_reason(
    serve: Callable[..., Served], config: Path, pki: PKI
) -> None:
    served = serve("tests.e2e.whoami_app:app", config, tls_pki=pki)
    url = served.url + "/pets/x"
    ok = _curl(url, pki, "--cert", str(pki.path("client.pem")), "--key", str(pki.path("client.key")))
    assert '"alias": "partner"' in ok.stdout

    now = dt.datetime.now(dt.UTC)
    expired = _write(pki, "expired", not_before=now - dt.timedelta(days=30), not_after=now - dt.timedelta(days=1))
    server_only = _write(pki, "server-eku", eku=(ExtendedKeyUsageOID.SERVER_AUTH,))
    for cert, key in (
        (str(pki.path("stranger.pem")), str(pki.path("stranger.key"))),  # unknown CA
        expired,
        server_only,  # a certificate not meant for clients
    ):
        assert _curl(url, pki, "--cert", cert, "--key", key).returncode != 0
    assert subprocess.run(["curl", "-sS", "--max-time", "5", "http://" + url.split("://")[1]], capture_output=True)

    expected = (
        "client certificate refused: unable to get local issuer certificate",
        "client certificate refused: certificate has expired",
        "client certificate refused: unsuitable certificate purpose",
        "plain HTTP sent to the TLS port",
    )
    assert wait_until(lambda: all(e in served.log() for e in expected), timeout=5), served.log()
    refused = [line for line in served.log().splitlines() if "TLS handshake refused from 127.0.0.1:" in line]
    assert len(refused) == 4, refused

    for _ in range(30):  # a flood of one reason: a line a second at most
        _curl(url, pki, "--cert", expired[0], "--key", expired[1])
    lines = [line for line in served.log().splitlines() if "certificate has expired" in line]
    assert 1 <= len(lines) <= 12, lines
    assert _curl(url, pki, "--cert", str(pki.path("client.pem")), "--key", str(pki.path("client.key"))).returncode == 0


def _serve_argv(config: Path, *flags: str) -> list[str]:
    return [sys.executable, "-m", "asgi_apim.cli", "serve", "tests.e2e.whoami_app:app", "--config", str(config), *flags]


def _start_fails(config: Path, *flags: str) -> str:
    done = subprocess.run(_serve_argv(config, "--port", "1", *flags), cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 2, done
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    return done.stderr


@pytest.mark.parametrize(
    ("cert", "key", "message"),
    [
        ("server.pem", None, "--ssl-certfile {d}/server.pem: holds no private key; give it with --ssl-keyfile"),
        (
            "server.key",
            "server.pem",
            "--ssl-certfile {d}/server.key: not a PEM certificate (a private key; are --ssl-certfile and "
            "--ssl-keyfile swapped?)",
        ),
        (
            "server.pem",
            "client.key",
            "--ssl-keyfile {d}/client.key: the key does not match the certificate in --ssl-certfile {d}/server.pem",
        ),
        (
            "server.pem",
            "server.pem",
            "--ssl-keyfile {d}/server.pem: not a private key (a certificate; are --ssl-certfile and --ssl-keyfile "
            "swapped?)",
        ),
    ],
)
def test_tls_flag_errors_name_the_flag_and_the_file(
    config: Path, pki: PKI, cert: str, key: str | None, message: str
) -> None:
    flags = ["--ssl-certfile", str(pki.path(cert))] + (["--ssl-keyfile", str(pki.path(key))] if key else [])
    err = _start_fails(config, *flags)
    assert message.format(d=pki.dir) in err, err
    assert "PEM lib" not in err


def test_memory_limits_under_several_workers_are_refused_unless_allowed(
    config: Path, serve: Callable[..., Served], pki: PKI
) -> None:
    err = _start_fails(config, "--workers", "2")
    assert '--workers 2 with throttling.storage = "memory://"' in err and "--allow-per-worker-limits" in err
    served = serve("tests.e2e.whoami_app:app", config, "--workers", "2", "--allow-per-worker-limits", tls_pki=pki)
    assert _curl(served.url + "/health", pki).returncode == 0


@pytest.mark.parametrize("tls", [False, True])
def test_mandatory_certificates_that_cannot_arrive_are_one_warning(
    serve: Callable[..., Served], config: Path, pki: PKI, tls: bool
) -> None:
    flags = ("--ssl-cert-reqs", "0") if tls else ()
    served = serve("tests.e2e.whoami_app:app", config, *flags, tls_pki=pki if tls else None)
    warnings = [line for line in served.log().splitlines() if "requires a client certificate" in line]
    assert len(warnings) == 1, served.log()
    assert warnings[0].startswith("WARNING") and "API pets" in warnings[0] and "trusted_proxies" in warnings[0]
    assert ("--ssl-cert-reqs 0" in warnings[0]) is tls


def test_no_warning_when_certificates_can_arrive(serve: Callable[..., Served], config: Path, pki: PKI) -> None:
    served = serve("tests.e2e.whoami_app:app", config, tls_pki=pki)
    assert "requires a client certificate" not in served.log()

"""An HTTPS backend that requires a client certificate, behind ``asgi-apim gateway``, whose SSL
profile (CA and client certificate) is swapped at run time and picked up without a restart."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import PKI, Servers, wait_until, write_pki

pytestmark = pytest.mark.e2e

BACKEND = "tests.e2e.gateway_backend:app"
CLIENT = ("alice", "alice-password")

CONFIG = """
[encryption]
key = "{key}"

[basic_auth]
users_file = "users.htpasswd"

[[apis]]
name = "secure"
context = "/secure"
backend = "https://127.0.0.1:{port}/s"
[apis.security]
application = ["basic"]
[apis.suspension]
initial = 0

[[apis]]
name = "unprofiled"
context = "/unprofiled"
backend = "https://localhost:{port}"
[apis.security]
application = ["basic"]
[apis.suspension]
initial = 0

[[ssl_profiles]]
servers = ["127.0.0.1:{port}"]
ca = "profile/ca.pem"
certificate = "profile/client.pem"
key = "profile/client.key"
reload_interval = 0.5
"""


def _install(pki: PKI, profile: Path) -> None:
    for name in ("ca.pem", "client.pem", "client.key"):
        tmp = profile / f".{name}"
        shutil.copy(pki.path(name), tmp)
        os.replace(tmp, profile / name)


def test_https_backend_with_a_client_certificate_and_a_profile_swapped_at_run_time(
    servers: Servers, pki: PKI, tmp_path: Path
) -> None:
    profile = tmp_path / "profile"
    profile.mkdir()
    _install(pki, profile)
    line = subprocess.run(["htpasswd", "-nbB", "-C", "4", *CLIENT], capture_output=True, check=True, text=True)
    (tmp_path / "users.htpasswd").write_text(line.stdout.strip() + "\n")
    backend = servers.uvicorn(BACKEND, env={"BACKEND_NAME": "tls1"}, tls_pki=pki)
    config = tmp_path / "gateway.toml"
    config.write_text(CONFIG.format(key=os.urandom(32).hex(), port=backend.port))
    gw = servers.gateway(config)
    with httpx.Client(base_url=gw.url, auth=CLIENT, timeout=20) as c:
        r = c.get("/secure/echo")
        assert r.status_code == 200, r.text
        assert r.json()["name"] == "tls1" and r.json()["raw_path"] == "/s/echo"
        # a backend not covered by a profile is verified against the system's CAs: our test CA is not one
        r = c.get("/unprofiled/echo")
        assert r.status_code == 502 and r.json()["code"] == 101503

        # the backend moves to a new CA (its server certificate and the client certificates it accepts)
        backend.process.stop()
        pki2 = write_pki(tmp_path / "pki2")
        servers.uvicorn(BACKEND, env={"BACKEND_NAME": "tls2"}, tls_pki=pki2, port=backend.port)
        r = c.get("/secure/echo")
        assert r.status_code == 502 and r.json()["code"] == 101503, r.text  # the old profile no longer fits

        _install(pki2, profile)  # the new CA and client certificate: no restart
        assert wait_until(lambda: c.get("/secure/echo").status_code == 200, timeout=10), gw.log()[-3000:]
        assert c.get("/secure/echo").json()["name"] == "tls2"

        # a broken file keeps the last good profile
        (profile / "ca.pem").write_text("not a certificate")
        for _ in range(3):
            assert c.get("/secure/echo").status_code == 200
            time.sleep(0.4)
    assert "Traceback" not in gw.log()

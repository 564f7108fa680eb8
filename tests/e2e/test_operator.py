"""What an operator sees, with real servers on loopback: whom the certificate header is believed
from, refusal lines (text and JSON) without a credential, the metrics endpoint, an app protected
twice refused at start-up, and plain uvicorn over TLS named as unable to pass certificates."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import PKI, REPO, Servers, _asgi_apim, wait_until

pytestmark = pytest.mark.e2e

CONFIG = """
[encryption]
key = "{key}"

[mutual_ssl]
truststore = ["pki/ca.pem"]
{trusted}

[metrics]
enabled = true

[[apis]]
name = "pets"
context = "/pets"
[apis.security]
mutual_ssl = "mandatory"
[[apis.certificates]]
alias = "partners"
certificate = "pki/ca.pem"
"""


def _config(tmp: Path, trusted: str = "") -> Path:
    path = tmp / "deployment.toml"
    path.write_text(CONFIG.format(key="5c" * 32, trusted=trusted))
    return path


def test_json_refusal_lines_trust_and_metrics_under_serve(tmp_path: Path, pki: PKI, servers: Servers) -> None:
    served = servers.serve(
        "tests.e2e.whoami_app:app", _config(tmp_path), "--log-format", "json", "--ssl-cert-reqs", "1", tls_pki=pki
    )
    forged = quote(pki.client.cert_pem().decode(), safe="")  # from loopback: believed from no peer
    with httpx.Client(verify=pki.client_context(None), base_url=served.url, timeout=10) as anonymous:
        refused = anonymous.get(
            "/pets/1", params={"apikey": "query-secret-1"}, headers={"x-wso2-client-certificate": forged}
        )
        assert refused.status_code == 401 and refused.json()["code"] == 900902
        metrics = anonymous.get("/metrics")
    with httpx.Client(verify=pki.client_context("client"), base_url=served.url, timeout=10) as partner:
        assert partner.get("/pets/1").status_code == 200

    def refusal_logged() -> bool:
        return '"asgi_apim.access"' in served.log()

    assert wait_until(refusal_logged)
    lines = [json.loads(line) for line in served.log().splitlines() if line.startswith("{")]
    assert lines, served.log()
    (trust,) = [d for d in lines if "believed from" in d["message"]]
    assert trust["message"] == "certificate header X-WSO2-CLIENT-CERTIFICATE believed from: no peer"
    (refusal,) = [d for d in lines if d["logger"] == "asgi_apim.access"]
    assert (refusal["method"], refusal["path"], refusal["peer"], refusal["api"]) == (
        "GET",
        "/pets/1",
        "127.0.0.1",
        "pets",
    )
    assert (refusal["status"], refusal["code"], refusal["detail"]) == (401, 900902, refused.json()["detail"])
    assert "query-secret-1" not in served.log() and forged[:200] not in served.log()

    assert metrics.status_code == 200  # public: no certificate, no credential
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(metrics.text)
        for s in family.samples
    }
    assert samples[("asgi_apim_requests_refused_total", (("api", "pets"), ("code", "900902"), ("status", "401")))] == 1
    assert samples[("asgi_apim_certificates_registered", (("source", "config"),))] == 1


def _protected_env(config: Path) -> dict[str, str]:
    return {**os.environ, "E2E_APIM_CONFIG": str(config), "PYTHONPATH": os.environ.get("PYTHONPATH", str(REPO))}


@pytest.mark.parametrize("workers", [[], ["--workers", "2", "--allow-per-worker-limits"]], ids=["one", "workers"])
def test_serve_refuses_an_app_already_protected(tmp_path: Path, pki: PKI, workers: list[str]) -> None:
    config = _config(tmp_path)
    argv = [*_asgi_apim(), "serve", "tests.e2e.protected_app:app", "--config", str(config), "--port", "1", *workers]
    done = subprocess.run(argv, cwd=REPO, env=_protected_env(config), capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stderr
    errors = [line for line in done.stderr.splitlines() if "already protect()ed" in line]
    assert len(errors) == 1 and "Traceback" not in done.stderr, done.stderr


def test_plain_uvicorn_over_tls_is_named_once(tmp_path: Path, pki: PKI, servers: Servers) -> None:
    config = _config(tmp_path)
    served = servers.uvicorn(
        "tests.e2e.protected_app:app", "--ssl-cert-reqs", "1", env=_protected_env(config), tls_pki=pki
    )
    with httpx.Client(verify=pki.client_context("client"), base_url=served.url, timeout=10) as partner:
        for _ in range(3):  # a client certificate uvicorn never passes on: refused
            assert partner.get("/pets/1").status_code == 401
    assert wait_until(lambda: "without the ASGI TLS extension" in served.log())
    assert served.log().count("without the ASGI TLS extension") == 1
    assert "asgi_apim.server.protocols:HTTPProtocol" in served.log()

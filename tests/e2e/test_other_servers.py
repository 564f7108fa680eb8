"""A ``protect()``ed app under plain uvicorn and under gunicorn with our worker, over real TLS:
the app sees the client certificate (the ASGI TLS extension) and the limits hold across
gunicorn's workers through a real redis-server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.e2e.conftest import PKI, REPO, Process, Servers, free_port
from tests.throttling.redis_server import RedisServer

pytestmark = pytest.mark.e2e

CONFIG = """
public_paths = ["/health"]

[encryption]
key = "{key}"

[mutual_ssl]
truststore = ["{ca}"]
trusted_proxies = []

[throttling]
storage = "{storage}"

[throttling.tiers]
Partner = "12/minute"

[[apis]]
name = "pets"
context = "/pets"

[apis.security]
mutual_ssl = "mandatory"

[[apis.certificates]]
alias = "partner"
certificate = "{ca}"
tier = "Partner"
"""


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path).start()
    yield server
    server.stop()


def _config(tmp_path: Path, pki: PKI, storage: str = "memory://") -> Path:
    path = tmp_path / "deployment.toml"
    path.write_text(CONFIG.format(key="a1" * 32, ca=pki.path("ca.pem"), storage=storage))
    return path


def _env(config: Path) -> dict[str, str]:
    return dict(os.environ, E2E_APIM_CONFIG=str(config), PYTHONPATH=os.pathsep.join([str(REPO), *sys.path]))


def _start(servers: Servers, name: str, argv: list[str], config: Path, port: int) -> Process:
    proc = Process(name, argv, servers.tmp / f"{name}-{port}.log", REPO, env=_env(config))
    servers.started.append((proc, 15))  # SIGTERM
    proc.wait_listening("127.0.0.1", port)
    return proc


def curl(port: int, pki: PKI, path: str = "/pets/whoami", cert: str | None = "client") -> tuple[int, str]:
    argv = ["curl", "-sS", "--max-time", "10", "--cacert", str(pki.path("ca.pem")), "-w", "\n%{http_code}"]
    if cert:
        argv += ["--cert", str(pki.path(f"{cert}.pem")), "--key", str(pki.path(f"{cert}.key"))]
    done = subprocess.run([*argv, f"https://127.0.0.1:{port}{path}"], capture_output=True, text=True, timeout=20)
    body, _, status = done.stdout.rpartition("\n")
    return int(status or 0), body


def _accepted_with_alias_and_401_without(port: int, pki: PKI) -> None:
    status, body = curl(port, pki)
    assert status == 200, body
    facts = json.loads(body)
    assert (facts["method"], facts["alias"], facts["subject"]) == (
        "mutual_ssl",
        "partner",
        "CN=e2e-client,O=asgi-apim dev",
    )
    status, body = curl(port, pki, cert=None)
    assert status == 401 and json.loads(body)["code"] == 900902, body


@pytest.mark.parametrize(
    ("http", "ws"),
    [
        ("asgi_apim.server.protocols:HttpToolsTLSProtocol", "asgi_apim.server.protocols:WebSocketsTLSProtocol"),
        ("asgi_apim.server.protocols:HTTPProtocol", "asgi_apim.server.protocols:WSProtocol"),
        ("asgi_apim.server.protocols:H11TLSProtocol", "none"),
    ],
)
def test_plain_uvicorn_with_our_protocols(servers: Servers, pki: PKI, tmp_path: Path, http: str, ws: str) -> None:
    port = free_port()
    argv = [sys.executable, "-m", "uvicorn", "tests.e2e.protected_app:app", "--port", str(port)]
    argv += ["--http", http, "--ws", ws, "--ssl-certfile", str(pki.path("server.pem"))]
    argv += ["--ssl-keyfile", str(pki.path("server.key")), "--ssl-ca-certs", str(pki.path("ca.pem"))]
    argv += ["--ssl-cert-reqs", "1"]
    _start(servers, "uvicorn", argv, _config(tmp_path, pki), port)
    _accepted_with_alias_and_401_without(port, pki)


def test_plain_uvicorn_without_our_protocols_never_sees_the_certificate(
    servers: Servers, pki: PKI, tmp_path: Path
) -> None:
    port = free_port()
    argv = [sys.executable, "-m", "uvicorn", "tests.e2e.protected_app:app", "--port", str(port)]
    argv += ["--ssl-certfile", str(pki.path("server.pem")), "--ssl-keyfile", str(pki.path("server.key"))]
    argv += ["--ssl-ca-certs", str(pki.path("ca.pem")), "--ssl-cert-reqs", "1"]
    _start(servers, "uvicorn", argv, _config(tmp_path, pki), port)
    assert curl(port, pki)[0] == 401  # why the protocol classes exist


def _gunicorn(servers: Servers, pki: PKI, config: Path, workers: int) -> int:
    port = free_port()
    argv = [sys.executable, "-m", "gunicorn", "-k", "asgi_apim.server.worker:UvicornWorker", "-w", str(workers)]
    argv += ["-b", f"127.0.0.1:{port}", "--certfile", str(pki.path("server.pem"))]
    argv += ["--keyfile", str(pki.path("server.key")), "--ca-certs", str(pki.path("ca.pem")), "--cert-reqs", "1"]
    argv += ["tests.e2e.protected_app:app"]
    _start(servers, "gunicorn", argv, config, port)
    return port


def test_gunicorn_workers_fill_the_extension_and_share_redis_limits(
    servers: Servers, pki: PKI, tmp_path: Path, redis_server: RedisServer
) -> None:
    port = _gunicorn(servers, pki, _config(tmp_path, pki, redis_server.url), workers=2)
    _accepted_with_alias_and_401_without(port, pki)  # one request of the 12 counted
    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda _: curl(port, pki)[0], range(20)))
    assert (statuses.count(200), statuses.count(429)) == (11, 9), statuses
    assert curl(port, pki, cert="stranger")[0] == 0  # the handshake refuses it, and says why
    log = servers.started[-1][0].log()
    assert "TLS handshake refused from 127.0.0.1:" in log and "unable to get local issuer certificate" in log, log
    assert log.count("Booting worker with pid") == 2, log
    pids = {line.rsplit(" ", 1)[-1] for line in log.splitlines() if "Booting worker" in line}
    assert len(pids) == 2

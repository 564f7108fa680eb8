"""Two ``asgi-apim serve`` nodes on one real PostgreSQL: the registry is live on both.

A certificate added through the CLI (run as an operator would, against the
same configuration) or through one node's admin API is accepted by both nodes
within the reload interval, refused by both once removed, and a database that
goes away leaves both serving the last good view. Callers reach the nodes from
127.0.0.1, a trusted proxy, with the certificate in the proxy header.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from asgi_apim.certs.pki import Issued, issue_client, make_ca
from tests.e2e.conftest import Served, _asgi_apim, wait_until
from tests.registry.postgres import PostgresServer

pytestmark = pytest.mark.e2e

INTERVAL = 0.5
CONFIG = """
public_paths = ["/health"]

[encryption]
key = "{key}"

[mutual_ssl]
trusted_proxies = ["127.0.0.1/32"]   # the test client plays the proxy
reload_interval = {interval}

[throttling.tiers]
Partner = "1000/minute"

[registry]
url = "{url}"

[registry.admin]
enabled = true
username = "ops"
password = "admin-password-for-e2e"

[[apis]]
name = "pets"
context = "/pets"

[apis.security]
mutual_ssl = "mandatory"
"""


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    server = PostgresServer().init().start()  # its own: this test stops and restarts it
    yield server
    server.destroy()


def status(node: Served, cert: Issued) -> int:
    header = {"X-WSO2-CLIENT-CERTIFICATE": quote(cert.cert_pem().decode(), safe="")}
    return httpx.get(node.url + "/pets/whoami", headers=header, timeout=10).status_code


def all_answer(nodes: list[Served], cert: Issued, code: int, timeout: float) -> float:
    """Seconds until every node answers ``code`` for ``cert`` (fails past ``timeout``)."""
    start = time.monotonic()
    assert wait_until(lambda: all(status(n, cert) == code for n in nodes), timeout=timeout, interval=0.05), [
        status(n, cert) for n in nodes
    ]
    return time.monotonic() - start


def certs(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*_asgi_apim(), "certs", *args, "--config", str(config)], capture_output=True, text=True, timeout=60
    )


def test_two_nodes_share_one_postgresql_registry(
    tmp_path: Path, postgres: PostgresServer, serve: Callable[..., Served]
) -> None:
    ca = make_ca("registry e2e CA")
    partner, second = issue_client(ca, "partner"), issue_client(ca, "second partner")
    partner.write(tmp_path / "partner.pem")
    config = tmp_path / "deployment.toml"
    config.write_text(CONFIG.format(key="ab" * 32, interval=INTERVAL, url=postgres.create_database()))
    nodes = [serve("tests.e2e.whoami_app:app", config) for _ in range(2)]
    budget = INTERVAL * 2 + 3  # one interval to poll, one to rebuild, and this busy machine's slack
    assert [status(n, partner) for n in nodes] == [401, 401]

    # the CLI: added, accepted by both; removed, refused by both
    r = certs(config, "add", "--api", "pets", "--alias", "partner", "--tier", "Partner", str(tmp_path / "partner.pem"))
    assert r.returncode == 0, r.stderr
    took = all_answer(nodes, partner, 200, budget)
    who = httpx.get(
        nodes[1].url + "/pets/whoami",
        headers={"X-WSO2-CLIENT-CERTIFICATE": quote(partner.cert_pem().decode(), safe="")},
        timeout=10,
    ).json()
    assert (who["alias"], who["tier"], who["method"]) == ("partner", "Partner", "mutual_ssl")
    assert certs(config, "remove", "--api", "pets", "--alias", "partner").returncode == 0
    all_answer(nodes, partner, 401, budget)
    print(f"CLI add accepted by both nodes in {took:.2f}s (reload_interval {INTERVAL}s)")

    # the admin API of node 0 adds, node 1's removes
    auth = ("ops", "admin-password-for-e2e")
    body = {"api": "pets", "alias": "second", "tier": "Partner", "certificate": second.cert_pem().decode()}
    r = httpx.post(nodes[0].url + "/admin/certificates", json=body, auth=auth, timeout=10)
    assert r.status_code == 201, r.text
    all_answer(nodes, second, 200, budget)
    assert httpx.delete(nodes[1].url + "/admin/certificates/pets/second", auth=auth, timeout=10).status_code == 204
    all_answer(nodes, second, 401, budget)
    listed = httpx.get(nodes[1].url + "/admin/certificates", auth=auth, timeout=10).json()
    assert listed == []
    assert httpx.get(nodes[0].url + "/admin/certificates", timeout=10).status_code == 401

    # the database goes away: both keep the last good view, say so once, and say when it is back
    assert (
        certs(
            config, "add", "--api", "pets", "--alias", "partner", "--tier", "Partner", str(tmp_path / "partner.pem")
        ).returncode
        == 0
    )
    all_answer(nodes, partner, 200, budget)
    postgres.stop()
    try:
        assert wait_until(lambda: all("certificate registry unreachable" in n.log() for n in nodes), timeout=budget * 2)
        for _ in range(4):  # several intervals without the database
            assert [status(n, partner) for n in nodes] == [200, 200]
            assert [status(n, second) for n in nodes] == [401, 401]
            time.sleep(INTERVAL)
        r = httpx.get(nodes[0].url + "/admin/certificates", auth=auth, timeout=10)
        assert r.status_code == 503 and r.headers["content-type"] == "application/problem+json"
        assert certs(config, "list").returncode == 1
    finally:
        postgres.start()
    assert wait_until(lambda: all("certificate registry reachable again" in n.log() for n in nodes), timeout=budget * 2)
    for n in nodes:
        assert n.log().count("certificate registry unreachable") == 1
        assert "admin-password-for-e2e" not in n.log() and postgres.url("x").split("@")[0] not in n.log()
    assert certs(config, "remove", "--api", "pets", "--alias", "partner").returncode == 0
    all_answer(nodes, partner, 401, budget)

"""Two ``asgi-apim serve`` nodes sharing one real redis-server count as one.

Callers reach the nodes over plain HTTP from 127.0.0.1, a trusted proxy, so
the certificate comes from the proxy header (its tier from the registration)
and an anonymous caller's IP from X-Forwarded-For. Concurrent requests spread
over both nodes are allowed exactly the tier's count, no more, no less.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from asgi_apim.certs.pki import issue_client, make_ca
from tests.e2e.conftest import Served
from tests.throttling.redis_server import RedisServer

pytestmark = pytest.mark.e2e

CONFIG = """
public_paths = ["/health"]

[encryption]
key = "{key}"

[mutual_ssl]
trusted_proxies = ["127.0.0.1/32"]   # the test client plays the proxy
truststore = ["ca.pem"]

[throttling]
storage = "{redis}"
strategy = "{strategy}"

[throttling.tiers]
Partner = "25/minute"
Unauthenticated = "7/minute"

[[apis]]
name = "pets"
context = "/pets"

[apis.security]
mutual_ssl = "mandatory"

[[apis.certificates]]
alias = "partners"
certificate = "ca.pem"
tier = "Partner"
"""


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path).start()
    yield server
    server.stop()


async def _spread(nodes: list[Served], n: int, path: str, headers: dict[str, str]) -> list[int]:
    async with httpx.AsyncClient(timeout=10) as client:
        responses = await asyncio.gather(
            *(client.get(nodes[i % len(nodes)].url + path, headers=headers) for i in range(n))
        )
    return [r.status_code for r in responses]


def test_two_nodes_allow_exactly_the_tier(
    tmp_path: Path, redis_server: RedisServer, serve: Callable[..., Served]
) -> None:
    # One strategy here (each node takes seconds to start); all three are exact across two
    # in-process nodes in tests/throttling/test_redis.py.
    ca = make_ca("cluster CA")
    (tmp_path / "ca.pem").write_bytes(ca.cert_pem())
    config = tmp_path / "deployment.toml"
    config.write_text(CONFIG.format(key="ef" * 32, redis=redis_server.url, strategy="moving-window"))
    nodes = [serve("example_app.main:app", config) for _ in range(2)]

    partner = {"X-WSO2-CLIENT-CERTIFICATE": quote(issue_client(ca, "partner").cert_pem().decode(), safe="")}
    statuses = asyncio.run(_spread(nodes, 60, "/pets", partner))
    assert (statuses.count(200), statuses.count(429)) == (25, 35), statuses

    other = {"X-WSO2-CLIENT-CERTIFICATE": quote(issue_client(ca, "other partner").cert_pem().decode(), safe="")}
    assert asyncio.run(_spread(nodes, 2, "/pets", other)) == [200, 200]  # its own count

    statuses = asyncio.run(_spread(nodes, 20, "/health", {"X-Forwarded-For": "198.51.100.7"}))
    assert (statuses.count(200), statuses.count(429)) == (7, 13), statuses
    assert asyncio.run(_spread(nodes, 2, "/health", {"X-Forwarded-For": "198.51.100.8"})) == [200, 200]
    # a line of the client's own before the proxy's: every line is read, the proxy's hop counts
    own_line_first = [("X-Forwarded-For", "203.0.113.99"), ("X-Forwarded-For", "198.51.100.7")]
    assert httpx.get(nodes[0].url + "/health", headers=own_line_first, timeout=10).status_code == 429

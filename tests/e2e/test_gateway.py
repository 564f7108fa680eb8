"""``asgi-apim gateway`` end to end: real backends (uvicorn processes), the gateway, nginx in front.

Backends: ``b1`` plain HTTP requiring basic auth; ``b2`` and ``b3`` for load balancing and
failover (``b3`` is killed mid-run); a TCP server that resets every connection; a listener
whose backlog is full (connections never complete). The client authenticates with basic
auth; the gateway calls the backends with its own (encrypted) basic credential.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from tests.e2e.conftest import PKI, Served, Servers, _asgi_apim, free_port, wait_until

pytestmark = pytest.mark.e2e

BACKEND = "tests.e2e.gateway_backend:app"
PROXY_ADDR = "127.0.0.2"
CLIENT = ("alice", "alice-password")
BACKEND_CRED = "svc:backend-secret"

CONFIG = """
[encryption]
key = "{key}"

[mutual_ssl]
trusted_proxies = ["{proxy}/32"]
truststore = ["{ca}"]

[basic_auth]
users_file = "users.htpasswd"

[[apis]]
name = "plain"
context = "/plain"
backend = "http://127.0.0.1:{b1}/base"
[apis.security]
application = ["basic"]
[apis.backend_security]
type = "basic"
username = "svc"
password = "{password}"
[apis.suspension]
initial = 0

[[apis]]
name = "lb"
context = "/lb"
backend = {{ type = "load_balance", urls = ["http://127.0.0.1:{b2}", "http://127.0.0.1:{b3}"] }}
[apis.security]
application = ["basic"]
[apis.suspension]
initial = 60

[[apis]]
name = "fo"
context = "/fo"
backend = {{ type = "failover", urls = ["http://127.0.0.1:{b3}", "http://127.0.0.1:{b2}"] }}
[apis.security]
application = ["basic"]
[apis.suspension]
initial = 60

[[apis]]
name = "hang"
context = "/hang"
backend = "http://127.0.0.1:{b1}"
[apis.security]
application = ["basic"]
[apis.backend_security]
type = "basic"
username = "svc"
password = "{password}"
[apis.timeouts]
read = 1
[apis.suspension]
initial = 0

[[apis]]
name = "blackhole"
context = "/blackhole"
backend = "http://127.0.0.1:{blackhole}"
[apis.security]
application = ["basic"]
[apis.timeouts]
connect = 0.5
[apis.suspension]
initial = 0

[[apis]]
name = "reset"
context = "/reset"
backend = "http://127.0.0.1:{reset}"
[apis.security]
application = ["basic"]
[apis.suspension]
initial = 0

[[apis]]
name = "refused"
context = "/refused"
backend = "http://127.0.0.1:{refused}"
[apis.security]
application = ["basic"]
[apis.suspension]
initial = 30

[[apis]]
name = "certs"
context = "/certs"
backend = "http://127.0.0.1:{b1}/c"
forward_client_certificate = true
[apis.security]
mutual_ssl = "mandatory"
[apis.backend_security]
type = "basic"
username = "svc"
password = "{password}"
[[apis.certificates]]
alias = "partner"
certificate = "{ca}"
tier = "Gold"

[[apis]]
name = "nobackend"
context = "/nobackend"
[apis.security]
application = ["basic"]
"""

EDGE = """
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_verify_client optional_no_ca;
        client_max_body_size 0;
        location / {{
            proxy_pass http://127.0.0.1:{upstream};
            proxy_bind {proxy};
            proxy_http_version 1.1;
            proxy_set_header Host $host;
            proxy_set_header X-WSO2-CLIENT-CERTIFICATE $ssl_client_escaped_cert;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto https;
        }}
    }}
"""


class Resetter(threading.Thread):
    """Accepts, reads the request head, and resets the connection (SO_LINGER 0)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]

    def run(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            conn.recv(65536)
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            conn.close()


def blackhole() -> tuple[socket.socket, list[socket.socket]]:
    """A listener that never accepts, its backlog filled: a new connection never completes."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    fillers = []
    for _ in range(8):
        s = socket.socket()
        s.setblocking(False)
        try:
            s.connect(server.getsockname())
        except BlockingIOError:
            pass
        fillers.append(s)
    return server, fillers


class Gateway:
    def __init__(self, servers: Servers, gw: Served, backends: dict[str, Served], pki: PKI, edge: int) -> None:
        self.servers, self.gw, self.backends, self.pki = servers, gw, backends, pki
        self.url = gw.url
        self.edge = f"https://127.0.0.1:{edge}"

    def client(self, **kw: object) -> httpx.Client:
        return httpx.Client(base_url=self.url, auth=CLIENT, timeout=30, **kw)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def gateway(module_servers: Servers, module_pki: PKI) -> Iterator[Gateway]:
    tmp = module_servers.tmp
    key = os.urandom(32).hex()
    config = tmp / "gateway.toml"
    config.write_text(f'[encryption]\nkey = "{key}"\n')
    password = subprocess.run(
        [*_asgi_apim(), "encrypt", "--config", str(config)],
        input="backend-secret",
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    line = subprocess.run(["htpasswd", "-nbB", "-C", "4", *CLIENT], capture_output=True, check=True, text=True)
    (tmp / "users.htpasswd").write_text(line.stdout.strip() + "\n")
    b1 = module_servers.uvicorn(BACKEND, env={"BACKEND_NAME": "b1", "BACKEND_BASIC": BACKEND_CRED})
    b2 = module_servers.uvicorn(BACKEND, env={"BACKEND_NAME": "b2"})
    b3 = module_servers.uvicorn(BACKEND, env={"BACKEND_NAME": "b3"})
    resetter = Resetter()
    resetter.start()
    hole, fillers = blackhole()
    config.write_text(
        CONFIG.format(
            key=key,
            proxy=PROXY_ADDR,
            ca=module_pki.path("ca.pem"),
            password=password,
            b1=b1.port,
            b2=b2.port,
            b3=b3.port,
            blackhole=hole.getsockname()[1],
            reset=resetter.port,
            refused=free_port(),
        )
    )
    gw = module_servers.gateway(config)
    edge = free_port()
    module_servers.nginx(
        EDGE.format(
            port=edge,
            cert=module_pki.path("server.pem"),
            key=module_pki.path("server.key"),
            upstream=gw.port,
            proxy=PROXY_ADDR,
        ),
        edge,
    )
    yield Gateway(module_servers, gw, {"b1": b1, "b2": b2, "b3": b3}, module_pki, edge)
    resetter.sock.close()
    hole.close()
    for s in fillers:
        s.close()


def _headers(doc: dict) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for k, v in doc["headers"]:
        out.setdefault(k, []).append(v)
    return out


def test_health_is_public_and_ready_reports_endpoints(gateway: Gateway) -> None:
    r = httpx.get(gateway.url + "/health")
    assert r.status_code == 200 and r.json() == {"status": "UP"}
    ready = httpx.get(gateway.url + "/health/ready").json()
    assert ready["apis"]["lb"]["production"][0]["state"] in ("active", "suspended")
    assert "127.0.0.1" not in httpx.get(gateway.url + "/health/ready").text


def test_context_replaced_raw_path_query_method_body_and_backend_credential(gateway: Gateway) -> None:
    with gateway.client() as c:
        r = c.post("/plain/echo/a%2Fb/%7Euser?x=1&y=%20z", content=b"hello", headers={"X-Custom": "kept"})
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["name"] == "b1" and doc["method"] == "POST" and doc["length"] == 5
    assert doc["raw_path"] == "/base/echo/a%2Fb/%7Euser"
    assert doc["query"] == "x=1&y=%20z"
    headers = _headers(doc)
    assert headers["authorization"] == ["Basic " + base64.b64encode(BACKEND_CRED.encode()).decode()]
    assert headers["x-custom"] == ["kept"]
    assert headers["host"] == [f"127.0.0.1:{gateway.backends['b1'].port}"]
    assert headers["x-forwarded-for"] == ["127.0.0.1"]
    assert headers["x-forwarded-proto"] == ["http"]
    assert headers["x-forwarded-host"] == [f"127.0.0.1:{gateway.gw.port}"]


def test_header_hygiene_both_ways(gateway: Gateway) -> None:
    with gateway.client() as c:
        r = c.get(
            "/plain/echo",
            headers={
                "Connection": "keep-alive, X-Secret-Hop",
                "X-Secret-Hop": "drop me",
                "Keep-Alive": "timeout=5",
                "TE": "trailers",
                "Proxy-Authorization": "Basic eDp5",
                "X-WSO2-CLIENT-CERTIFICATE": "forged",
                "X-JWT-Assertion": "forged",
                "X-Forwarded-For": "6.6.6.6",
            },
        )
    assert r.status_code == 200
    names = set(_headers(r.json()))
    for hop in ("connection", "x-secret-hop", "keep-alive", "te", "proxy-authorization", "x-jwt-assertion"):
        assert hop not in names
    assert "x-wso2-client-certificate" not in names
    assert _headers(r.json())["x-forwarded-for"] == ["127.0.0.1"]  # an untrusted peer's chain is not kept
    assert "x-hop" not in r.headers and "keep-alive" not in r.headers  # the backend's hop-by-hop headers


def test_client_credential_never_reaches_the_backend(gateway: Gateway) -> None:
    client_basic = "Basic " + base64.b64encode(":".join(CLIENT).encode()).decode()
    with gateway.client() as c:
        doc = c.get("/lb/echo").json()
    assert client_basic not in json.dumps(doc)
    assert "authorization" not in _headers(doc)  # no backend security on lb: no Authorization at all


def test_api_without_backend_is_404_and_unknown_paths_too(gateway: Gateway) -> None:
    with gateway.client() as c:
        r = c.get("/nobackend/x")
        assert r.status_code == 404 and r.json()["code"] == 900906
        assert c.get("/elsewhere").status_code == 404


def test_hanging_backend_is_504_101504(gateway: Gateway) -> None:
    with gateway.client() as c:
        t = time.monotonic()
        r = c.get("/hang/hang")
    assert r.status_code == 504 and r.json()["code"] == 101504
    assert r.headers["content-type"] == "application/problem+json"
    assert 0.9 < time.monotonic() - t < 10
    assert "127.0.0.1" not in r.text


def test_connect_timeout_is_504_101508(gateway: Gateway) -> None:
    with gateway.client() as c:
        r = c.get("/blackhole/x")
    assert r.status_code == 504 and r.json()["code"] == 101508, r.text


def test_reset_is_502_101505(gateway: Gateway) -> None:
    with gateway.client() as c:
        r = c.get("/reset/x")
    assert r.status_code == 502 and r.json()["code"] == 101505, r.text
    assert "Traceback" not in r.text and str(gateway.gw.port) not in r.text


def test_refused_then_suspended_303001(gateway: Gateway) -> None:
    with gateway.client() as c:
        r = c.get("/refused/x")
        assert r.status_code == 502 and r.json()["code"] == 101503, r.text
        r = c.get("/refused/x")
        assert r.status_code == 503 and r.json()["code"] == 303001, r.text
    ready = httpx.get(gateway.url + "/health/ready")
    assert ready.status_code == 503 and ready.json()["apis"]["refused"]["production"][0]["state"] == "suspended"
    assert "backend" in gateway.gw.log() or "refused" in gateway.gw.log()


def test_upload_and_download_100_mib_stream_with_flat_rss(gateway: Gateway) -> None:
    size = 100 * 1024 * 1024
    pid = _gateway_pid(gateway.gw)
    before = _rss(pid)
    digest = hashlib.sha256()
    pattern = bytes(range(256)) * 256

    def body() -> Iterator[bytes]:
        for _ in range(size // len(pattern)):
            digest.update(pattern)
            yield pattern

    peak = [before]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], _rss(pid))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        with gateway.client() as c:
            r = c.post("/plain/upload", content=body())
            assert r.status_code == 200, r.text
            assert r.json() == {"sha256": digest.hexdigest(), "size": size, "name": "b1"}
            down = hashlib.sha256()
            got = 0
            with c.stream("GET", "/plain/download", params={"size": size}) as resp:
                assert resp.status_code == 200
                for chunk in resp.iter_bytes():
                    down.update(chunk)
                    got += len(chunk)
            assert got == size and down.hexdigest() == digest.hexdigest()
    finally:
        stop.set()
        sampler.join()
    grown = peak[0] - before
    print(f"gateway RSS before {before / 2**20:.1f} MiB, peak {peak[0] / 2**20:.1f} MiB, grew {grown / 2**20:.1f} MiB")
    assert grown < 30 * 2**20


def test_expect_100_continue(gateway: Gateway) -> None:
    port = gateway.gw.port
    auth = base64.b64encode(":".join(CLIENT).encode())
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(
            b"POST /plain/upload HTTP/1.1\r\nHost: x\r\nAuthorization: Basic " + auth + b"\r\n"
            b"Content-Length: 5\r\nExpect: 100-continue\r\n\r\n"
        )
        first = s.recv(4096)
        assert first.startswith(b"HTTP/1.1 100"), first
        s.sendall(b"hello")
        answer = b""
        while b"}" not in answer:
            answer += s.recv(4096)
    assert b"200 OK" in answer and hashlib.sha256(b"hello").hexdigest().encode() in answer


def test_load_balance_round_robin_and_failover_with_a_backend_killed(gateway: Gateway) -> None:
    with gateway.client() as c:
        names = {c.get("/lb/echo").json()["name"] for _ in range(4)}
        assert names == {"b2", "b3"}
        assert c.get("/fo/echo").json()["name"] == "b3"  # in order: the first while it is up
        gateway.backends["b3"].process.stop()
        assert {c.get("/lb/echo").json()["name"] for _ in range(4)} == {"b2"}
        assert c.get("/fo/echo").json()["name"] == "b2"
    states = httpx.get(gateway.url + "/health/ready").json()["apis"]["lb"]["production"]
    assert [s["state"] for s in states] == ["active", "suspended"]


def test_nginx_in_front_passes_the_validated_certificate(gateway: Gateway) -> None:
    ctx = gateway.pki.client_context("client")
    with httpx.Client(verify=ctx, timeout=10) as c:
        r = c.get(gateway.edge + "/certs/echo")
    assert r.status_code == 200, r.text
    headers = _headers(r.json())
    pem = gateway.pki.path("client.pem").read_bytes()
    assert headers["x-wso2-client-certificate"] == [quote(pem.decode(), safe="")]
    assert headers["x-forwarded-for"] == ["127.0.0.1, 127.0.0.2"]  # nginx is trusted: its chain kept
    assert headers["x-forwarded-proto"] == ["https"]
    with httpx.Client(verify=gateway.pki.client_context("stranger"), timeout=10) as c:
        assert c.get(gateway.edge + "/certs/echo").status_code == 401


def test_websocket_echo_and_close_code(gateway: Gateway) -> None:
    from websockets.sync.client import connect

    auth = "Basic " + base64.b64encode(":".join(CLIENT).encode()).decode()
    url = f"ws://127.0.0.1:{gateway.gw.port}/plain/ws?q=1"
    with connect(url, additional_headers={"Authorization": auth}, subprotocols=["chat"]) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == "chat"
        ws.send("hi")
        assert ws.recv(timeout=5) == "b1:hi"
        ws.send(b"\x00\x01")
        assert ws.recv(timeout=5) == b"\x00\x01"
        ws.send("path")
        assert ws.recv(timeout=5) == "/base/ws?q=1"
        ws.send("headers")
        seen = json.loads(ws.recv(timeout=5))
        assert seen["authorization"] == "Basic " + base64.b64encode(BACKEND_CRED.encode()).decode()
        ws.send("close:4001")
        with pytest.raises(Exception):
            ws.recv(timeout=5)
        assert ws.close_code == 4001


def test_client_disconnect_mid_download_closes_the_backend_request(gateway: Gateway) -> None:
    auth = base64.b64encode(":".join(CLIENT).encode())
    with socket.create_connection(("127.0.0.1", gateway.gw.port), timeout=10) as s:
        s.sendall(
            b"GET /plain/download?size=1000000000 HTTP/1.1\r\nHost: x\r\nAuthorization: Basic " + auth + b"\r\n\r\n"
        )
        assert s.recv(65536)
    assert wait_until(lambda: "client went away" in gateway.gw.log(), timeout=10), gateway.gw.log()[-2000:]


def _gateway_pid(gw: Served) -> int:
    return gw.process.proc.pid


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0

"""Throughput on real servers: bare uvicorn against ``asgi-apim serve``, public path.

    python bench/bench_uvicorn.py [--duration 3] [--rounds 3] [--connections 16] [--load auto|wrk|httpx]

Starts, on loopback, the example app under bare uvicorn and under
``asgi-apim serve`` (our protocol classes, the stack from a temporary
configuration with a mutual-SSL API), each over plain HTTP and over TLS, and
measures ``GET /health`` (a public path: no credential, the stack's routing
only) in rounds, round-robin, so every server sees the same machine state.
The load comes from ``wrk`` when it is installed (keep-alive connections), else
from an httpx client sending a bounded number of requests. Prints the median
requests/second of each server and its ratio to bare uvicorn on the same
transport. All servers are stopped at the end, whatever happens.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from asgi_apim.certs.pki import init_pki  # noqa: E402

CONFIG = """
public_paths = ["/health"]

[encryption]
key = "{key}"

[throttling.tiers]
Unauthenticated = "unlimited"   # the public path is counted per IP; all load comes from one IP

[mutual_ssl]
truststore = ["pki/ca.pem"]

[[apis]]
name = "pets"
context = "/pets"

[apis.security]
mutual_ssl = "mandatory"

[[apis.certificates]]
alias = "dev"
certificate = "pki/ca.pem"
tier = "Gold"
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    name: str
    transport: str
    argv: list[str]
    port: int
    proc: subprocess.Popen[bytes] | None = None
    rates: list[float] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"{'https' if self.transport == 'tls' else 'http'}://127.0.0.1:{self.port}/health"

    def start(self, log: Path) -> None:
        self.proc = subprocess.Popen(self.argv, cwd=REPO, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited:\n{log.read_text()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not start:\n{log.read_text()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)


def servers(work: Path) -> list[Server]:
    pki = work / "pki"
    config = work / "deployment.toml"
    tls = ["--ssl-certfile", str(pki / "server.pem"), "--ssl-keyfile", str(pki / "server.key")]
    quiet = ["--log-level", "warning", "--no-access-log"]
    uvicorn = [sys.executable, "-m", "uvicorn", "example_app.main:app", "--host", "127.0.0.1", *quiet]
    apim = [sys.executable, "-m", "asgi_apim.cli", "serve", "example_app.main:app", "--config", str(config), "--host", "127.0.0.1", *quiet]
    found = []
    for transport in ("plain", "tls"):
        extra = tls if transport == "tls" else []
        for name, argv in (("bare uvicorn", uvicorn), ("asgi-apim serve", apim)):
            port = free_port()
            found.append(Server(name, transport, [*argv, "--port", str(port), *extra], port))
    return found


def wrk(url: str, duration: int, connections: int) -> float:
    out = subprocess.run(
        ["wrk", "-t", "2", "-c", str(connections), "-d", f"{max(1, duration)}s", url], capture_output=True, text=True, check=True
    ).stdout
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if match is None or "Non-2xx" in out or "Socket errors" in out:
        raise RuntimeError(f"{url}: not every request succeeded:\n{out}")
    return float(match.group(1))


async def _httpx(url: str, requests: int, connections: int, verify: ssl.SSLContext | bool) -> float:
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(verify=verify, limits=limits) as client:
        async def worker(n: int) -> None:
            for _ in range(n):
                (await client.get(url)).raise_for_status()

        await worker(10)
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(requests // connections) for _ in range(connections)))
        return (requests // connections) * connections / (time.perf_counter() - t0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=int, default=3, help="whole seconds per wrk run")
    parser.add_argument("--requests", type=int, default=2000, help="requests per httpx run (without wrk)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--load", choices=("auto", "wrk", "httpx"), default="auto", help="load generator (auto: wrk if installed)")
    args = parser.parse_args()
    use_wrk = args.load == "wrk" or (args.load == "auto" and shutil.which("wrk") is not None)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        init_pki(work / "pki")
        (work / "deployment.toml").write_text(CONFIG.format(key=os.urandom(32).hex()))
        verify = ssl.create_default_context(cafile=str(work / "pki" / "ca.pem"))
        started = servers(work)
        try:
            for s in started:
                s.start(work / f"{s.port}.log")
                httpx.get(s.url, verify=verify, timeout=10).raise_for_status()  # the right app answers
            for _ in range(args.rounds):
                for s in started:
                    if use_wrk:
                        s.rates.append(wrk(s.url, args.duration, args.connections))
                    else:
                        s.rates.append(asyncio.run(_httpx(s.url, args.requests, args.connections, verify)))
        finally:
            for s in started:
                s.stop()
    load = f"wrk, {args.connections} connections, {args.duration}s" if use_wrk else f"httpx, {args.connections} connections, {args.requests} requests"
    print(f"GET /health, {args.rounds} rounds round-robin ({load}); median requests/second\n")
    print(f"| {'server':<16} | {'transport':<9} | {'req/s':>9} | {'vs bare':>7} |")
    print(f"| {'-' * 16} | {'-' * 9} | {'-' * 9}:| {'-' * 7}:|")
    for s in started:
        bare = next(b for b in started if b.transport == s.transport and b.name == "bare uvicorn")
        rate = statistics.median(s.rates)
        print(f"| {s.name:<16} | {s.transport:<9} | {rate:>9.0f} | {rate / statistics.median(bare.rates):>6.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

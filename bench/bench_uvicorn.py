"""Throughput on real servers: bare uvicorn against ``asgi-apim serve``.

    python bench/bench_uvicorn.py [--duration 3] [--rounds 3] [--connections 16] [--load auto|wrk|httpx] [--no-pin]

Starts, on loopback, the example app under bare uvicorn and under
``asgi-apim serve`` (our protocol classes, the stack from a temporary
configuration with a mutual-SSL API), each over plain HTTP and over TLS, and
measures two requests in rounds, round-robin, so every server sees the same
machine state:

- ``GET /health``: a public path (no credential, the stack's routing only);
- ``GET /pets/whoami`` with the client certificate in the proxy header (the
  load comes from 127.0.0.1, a trusted proxy): a cached certificate and a
  Gold tier limit in memory (moving window, ``RateLimit`` headers), never
  exhausted, so every request does the whole counting work. Bare uvicorn gets
  the same request and ignores the header.

The load comes from ``wrk`` when it is installed (keep-alive connections), else
from an httpx client sending a bounded number of requests. With two CPUs or
more and ``taskset`` (util-linux), servers run on one CPU and the load on
another (``--no-pin`` to share them), so the load generator does not take the
server's time slices. Prints the median requests/second of each server, and
its ratio to bare uvicorn on the same transport and request: the median of the
rounds' ratios, each round's pair measured one right after the other, so a
drift in the machine's speed between rounds cancels out. All servers are
stopped at the end, whatever happens.
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
from urllib.parse import quote

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
Gold = "100000000/minute"       # counted on every request, never exhausted during a run

[mutual_ssl]
truststore = ["pki/ca.pem"]
trusted_proxies = ["127.0.0.1/32"]   # the load generator sends the certificate header as a proxy would

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


@dataclass(frozen=True)
class Case:
    label: str
    path: str
    headers: tuple[tuple[str, str], ...] = ()


def cases(work: Path) -> list[Case]:
    header = quote((work / "pki" / "client.pem").read_text(), safe="")
    return [
        Case("/health (public)", "/health"),
        Case("/pets/whoami (cert, Gold)", "/pets/whoami", (("x-wso2-client-certificate", header),)),
    ]


@dataclass
class Server:
    name: str
    transport: str
    argv: list[str]
    port: int
    proc: subprocess.Popen[bytes] | None = None
    rates: dict[Case, list[float]] = field(default_factory=dict)

    def url(self, case: Case) -> str:
        return f"{'https' if self.transport == 'tls' else 'http'}://127.0.0.1:{self.port}{case.path}"

    def start(self, log: Path) -> None:
        self.proc = subprocess.Popen(
            self.argv, cwd=REPO, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True
        )
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


def servers(work: Path, pin: list[str]) -> list[Server]:
    pki = work / "pki"
    config = work / "deployment.toml"
    tls = ["--ssl-certfile", str(pki / "server.pem"), "--ssl-keyfile", str(pki / "server.key")]
    quiet = ["--log-level", "warning", "--no-access-log"]
    uvicorn = [sys.executable, "-m", "uvicorn", "example_app.main:app", "--host", "127.0.0.1", *quiet]
    apim = [
        sys.executable,
        "-m",
        "asgi_apim.cli",
        "serve",
        "example_app.main:app",
        "--config",
        str(config),
        "--host",
        "127.0.0.1",
        *quiet,
    ]
    found = []
    for transport in ("plain", "tls"):
        extra = tls if transport == "tls" else []
        for name, argv in (("bare uvicorn", uvicorn), ("asgi-apim serve", apim)):
            port = free_port()
            found.append(Server(name, transport, [*pin, *argv, "--port", str(port), *extra], port))
    return found


def wrk(url: str, headers: tuple[tuple[str, str], ...], duration: int, connections: int, pin: list[str]) -> float:
    extra = [arg for name, value in headers for arg in ("-H", f"{name}: {value}")]
    threads = "1" if pin else "2"
    out = subprocess.run(
        [*pin, "wrk", "-t", threads, "-c", str(connections), "-d", f"{max(1, duration)}s", *extra, url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if match is None or "Non-2xx" in out or "Socket errors" in out:
        raise RuntimeError(f"{url}: not every request succeeded:\n{out}")
    return float(match.group(1))


async def _httpx(
    url: str, headers: tuple[tuple[str, str], ...], requests: int, connections: int, verify: ssl.SSLContext | bool
) -> float:
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(verify=verify, limits=limits, headers=list(headers)) as client:

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
    parser.add_argument(
        "--load", choices=("auto", "wrk", "httpx"), default="auto", help="load generator (auto: wrk if installed)"
    )
    parser.add_argument(
        "--pin",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="servers on one CPU, the load on another (default: when there are two CPUs and taskset)",
    )
    args = parser.parse_args()
    use_wrk = args.load == "wrk" or (args.load == "auto" and shutil.which("wrk") is not None)
    pin = args.pin if args.pin is not None else (os.cpu_count() or 1) >= 2 and shutil.which("taskset") is not None
    server_cpu, load_cpu = (["taskset", "-c", "1"], ["taskset", "-c", "0"]) if pin else ([], [])
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        init_pki(work / "pki")
        (work / "deployment.toml").write_text(CONFIG.format(key=os.urandom(32).hex()))
        verify = ssl.create_default_context(cafile=str(work / "pki" / "ca.pem"))
        started = servers(work, server_cpu)
        requests = cases(work)
        try:
            for s in started:
                s.start(work / f"{s.port}.log")
                for case in requests:  # the right app answers, and the stack does what is measured
                    check(s, case, httpx.get(s.url(case), headers=list(case.headers), verify=verify, timeout=10))
            for _ in range(args.rounds):
                for case in requests:
                    for s in started:
                        if use_wrk:
                            rate = wrk(s.url(case), case.headers, args.duration, args.connections, load_cpu)
                        else:
                            rate = asyncio.run(
                                _httpx(s.url(case), case.headers, args.requests, args.connections, verify)
                            )
                        s.rates.setdefault(case, []).append(rate)
        finally:
            for s in started:
                s.stop()
    load = (
        f"wrk, {args.connections} connections, {args.duration}s"
        if use_wrk
        else f"httpx, {args.connections} connections, {args.requests} requests"
    )
    where = "; servers on CPU 1, load on CPU 0" if pin else ""
    print(f"{args.rounds} rounds round-robin ({load}{where}); median requests/second, median of the rounds' ratios\n")
    print(f"| {'request':<26} | {'server':<16} | {'transport':<9} | {'req/s':>9} | {'vs bare':>7} |")
    print(f"| {'-' * 26} | {'-' * 16} | {'-' * 9} | {'-' * 9}:| {'-' * 7}:|")
    for case in requests:
        for s in started:
            bare = next(b for b in started if b.transport == s.transport and b.name == "bare uvicorn")
            rate = statistics.median(s.rates[case])
            ratio = statistics.median(r / b for r, b in zip(s.rates[case], bare.rates[case]))
            print(f"| {case.label:<26} | {s.name:<16} | {s.transport:<9} | {rate:>9.0f} | {ratio:>6.2f}x |")
    return 0


def check(server: Server, case: Case, response: httpx.Response) -> None:
    response.raise_for_status()
    if server.name == "asgi-apim serve" and case.headers:
        body = response.json()
        if body.get("method") != "mutual_ssl" or body.get("tier") != "Gold" or "ratelimit" not in response.headers:
            raise RuntimeError(
                f"{server.name} {case.label}: not a Gold mutual-SSL caller with rate-limit headers: {body}"
            )


if __name__ == "__main__":
    raise SystemExit(main())

"""Slow clients against a real ``asgi-apim serve`` on loopback (issue 26, point 4).

Opens N connections that each send half a request head and then nothing,
while a normal client keeps requesting ``/health`` on fresh connections; reports
when the server closed the half-sent ones and the normal requests' latency
before and during the attack, and whether any ``accept()`` failed.

    python bench/bench_slow_clients.py [--slow 500] [--header-timeout 2] [--tls]

`attack` is the measurement; ``tests/e2e/test_slow_clients.py`` runs it
against a server of its own and asserts on the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HALF_HEAD = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: slow"
FULL_REQUEST = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"


@dataclass
class Figures:
    slow: int
    header_timeout: float
    closed: int  # half-sent connections the server closed
    closed_first_s: float  # after the attack began
    closed_last_s: float
    baseline_ms_p50: float
    baseline_ms_p95: float
    during_ms_p50: float
    during_ms_p95: float
    during_errors: int


async def _request(host: str, port: int, context: ssl.SSLContext | None) -> float:
    """One request on a fresh connection; its latency in ms (ConnectionError if it got no 200)."""
    start = time.perf_counter()
    reader, writer = await asyncio.open_connection(
        host, port, ssl=context, server_hostname="localhost" if context else None
    )
    writer.write(FULL_REQUEST)
    data = await reader.read()
    writer.close()
    if not data.startswith(b"HTTP/1.1 200"):
        raise ConnectionError(data[:40])
    return (time.perf_counter() - start) * 1000


async def _latencies(host: str, port: int, context: ssl.SSLContext | None, seconds: float) -> tuple[list[float], int]:
    found: list[float] = []
    errors = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            found.append(await _request(host, port, context))
        except (OSError, ConnectionError, asyncio.IncompleteReadError):
            errors += 1
        await asyncio.sleep(0.02)
    return found, errors


async def _slow(host: str, port: int, context: ssl.SSLContext | None, began: float, limit: float) -> float | None:
    """A half-sent request head; when (seconds since ``began``) the server closed it, None if it did not."""
    reader, writer = await asyncio.open_connection(
        host, port, ssl=context, server_hostname="localhost" if context else None
    )
    writer.write(HALF_HEAD)
    try:
        await asyncio.wait_for(reader.read(), timeout=limit)  # b"" (or a reset) once the server closes
    except (ConnectionError, ssl.SSLError):
        pass
    except TimeoutError:
        writer.close()
        return None
    writer.close()
    return time.monotonic() - began


def _p(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1] if len(values) > 1 else values[0]


async def attack(
    host: str, port: int, slow: int, header_timeout: float, context: ssl.SSLContext | None = None
) -> Figures:
    baseline, _ = await _latencies(host, port, context, 1.5)
    began = time.monotonic()
    limit = header_timeout + 10
    slow_tasks = [asyncio.create_task(_slow(host, port, context, began, limit)) for _ in range(slow)]
    await asyncio.sleep(0.3)
    during, errors = await _latencies(host, port, context, max(header_timeout - 0.5, 1.0))
    closed_at = [t for t in await asyncio.gather(*slow_tasks) if t is not None]
    return Figures(
        slow=slow,
        header_timeout=header_timeout,
        closed=len(closed_at),
        closed_first_s=round(min(closed_at, default=float("nan")), 2),
        closed_last_s=round(max(closed_at, default=float("nan")), 2),
        baseline_ms_p50=round(_p(baseline, 50), 2),
        baseline_ms_p95=round(_p(baseline, 95), 2),
        during_ms_p50=round(_p(during, 50), 2),
        during_ms_p95=round(_p(during, 95), 2),
        during_errors=errors,
    )


CONFIG = 'public_paths = ["/health"]\n\n[encryption]\nkey = "' + "ab" * 32 + '"\n'


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slow", type=int, default=500)
    parser.add_argument("--header-timeout", type=float, default=2.0)
    parser.add_argument("--tls", action="store_true", help="serve over TLS (the handshake counts too)")
    ns = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "deployment.toml"
        config.write_text(CONFIG)
        port = _free_port()
        argv = [sys.executable, "-m", "asgi_apim.cli", "serve", "tests.e2e.whoami_app:app", "--config", str(config)]
        argv += ["--port", str(port), "--app-dir", str(REPO), "--header-timeout", str(ns.header_timeout)]
        argv += ["--no-access-log"]
        context = None
        if ns.tls:
            from asgi_apim.certs.pki import init_pki

            init_pki(Path(tmp) / "pki")
            argv += ["--ssl-certfile", f"{tmp}/pki/server.pem", "--ssl-keyfile", f"{tmp}/pki/server.key"]
            context = ssl.create_default_context(cafile=f"{tmp}/pki/ca.pem")
        env = dict(os.environ, PYTHONPATH=f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
        with open(Path(tmp) / "serve.log", "wb") as log:
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
            try:
                deadline = time.monotonic() + 20
                while time.monotonic() < deadline:
                    try:
                        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                        break
                    except OSError:
                        time.sleep(0.1)
                figures = asyncio.run(attack("127.0.0.1", port, ns.slow, ns.header_timeout, context))
            finally:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=10)
        print(json.dumps(asdict(figures), indent=2))


if __name__ == "__main__":
    main()

"""Which upstream client a gateway worker should use: small GETs through minimal proxies.

    python bench/bench_gateway.py [--duration 3] [--rounds 2] [--connections 32]

Starts on loopback, one worker each (uvicorn with uvloop and httptools):

- ``direct``: a bare Starlette backend answering ``GET /`` with a short text;
- ``lean``: a minimal pure-ASGI proxy over `asgi_apim.gateway.upstream.UpstreamPool`;
- ``aiohttp``: the same proxy over one shared ``aiohttp.ClientSession``;
- ``httpx``: the same proxy over one shared ``httpx.AsyncClient``;
- ``nginx``: ``proxy_pass`` to the backend with upstream keepalive (one worker process).

Every proxy keeps a pool of keep-alive connections to the backend and streams
bodies both ways. The load is ``wrk -t1 -cN`` for ``--duration`` seconds per
target, targets in turn, for ``--rounds`` rounds; the table shows the median
requests/second, its ratio to ``direct`` (the median of each round's ratio) and
the worst p99 latency wrk reported, and the CPU time the target's processes
(nginx: master and worker) spent per request served, from ``/proc/PID/stat``
(utime + stime) read before and after each run: the steadier figure on a busy
machine, where requests/s move with whatever else runs. Needs ``wrk`` and
``nginx`` on the PATH (and Linux's /proc for the CPU column).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
HOP = {b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"transfer-encoding", b"upgrade"}
NGINX = """
worker_processes 1;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {work}/body; proxy_temp_path {work}/proxy; fastcgi_temp_path {work}/fcgi;
    uwsgi_temp_path {work}/uwsgi; scgi_temp_path {work}/scgi;
    upstream backend {{ server 127.0.0.1:{backend}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""


def backend_app() -> Any:
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    async def hello(request: Any) -> PlainTextResponse:
        return PlainTextResponse("hello, world")

    return Starlette(routes=[Route("/", hello)])


def _headers(scope: Scope) -> list[tuple[bytes, bytes]]:
    return [(n, v) for n, v in scope["headers"] if n not in HOP]


async def _body(receive: Receive) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        if message.get("body"):
            yield message["body"]
        if not message.get("more_body"):
            return


def _target(scope: Scope) -> bytes:
    path: bytes = scope.get("raw_path") or scope["path"].encode()
    return path + (b"?" + scope["query_string"] if scope["query_string"] else b"")


def lean_proxy(port: int) -> Any:
    from asgi_apim.gateway.upstream import Origin, UpstreamPool, UpstreamRequest

    pool: UpstreamPool | None = None

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        nonlocal pool
        if scope["type"] != "http":
            return
        if pool is None:
            pool = UpstreamPool(Origin("http", "127.0.0.1", port))
        length = next((int(v) for n, v in scope["headers"] if n == b"content-length"), None)
        has_body = length is not None or any(n == b"transfer-encoding" for n, _ in scope["headers"])
        req = UpstreamRequest(
            scope["method"], _target(scope), _headers(scope), _body(receive) if has_body else None, length
        )
        resp = await pool.request(req)
        try:
            headers = [(n, v) for n, v in resp.headers if n.lower() not in HOP]
            await send({"type": "http.response.start", "status": resp.status, "headers": headers})
            async for chunk in resp.stream():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        finally:
            await resp.aclose()

    return app


def aiohttp_proxy(port: int) -> Any:
    import aiohttp

    session: aiohttp.ClientSession | None = None

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        nonlocal session
        if scope["type"] != "http":
            return
        if session is None:
            session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100), auto_decompress=False)
        headers = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in _headers(scope)]
        has_body = any(n in (b"content-length", b"transfer-encoding") for n, _ in scope["headers"])
        url = f"http://127.0.0.1:{port}{_target(scope).decode('latin-1')}"
        async with session.request(
            scope["method"],
            url,
            headers=headers,
            data=_body(receive) if has_body else None,
            skip_auto_headers=("User-Agent",),
        ) as resp:
            out = [(n.lower(), v) for n, v in resp.raw_headers if n.lower() not in HOP]
            await send({"type": "http.response.start", "status": resp.status, "headers": out})
            async for chunk in resp.content.iter_any():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})

    return app


def httpx_proxy(port: int) -> Any:
    import httpx

    client = httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", limits=httpx.Limits(max_connections=100))

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        has_body = any(n in (b"content-length", b"transfer-encoding") for n, _ in scope["headers"])
        req = client.build_request(
            scope["method"],
            _target(scope).decode("latin-1"),
            headers=_headers(scope),
            content=_body(receive) if has_body else None,
        )
        resp = await client.send(req, stream=True)
        try:
            out = [(n.lower(), v) for n, v in resp.headers.raw if n.lower() not in HOP]
            await send({"type": "http.response.start", "status": resp.status_code, "headers": out})
            async for chunk in resp.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        finally:
            await resp.aclose()

    return app


def serve(kind: str, port: int, backend: int) -> None:
    import uvicorn

    apps = {"lean": lean_proxy, "aiohttp": aiohttp_proxy, "httpx": httpx_proxy}
    app = backend_app() if kind == "direct" else apps[kind](backend)
    uvicorn.run(
        app, host="127.0.0.1", port=port, loop="uvloop", http="httptools", log_level="warning", access_log=False
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_listening(port: int, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not start")


def cpu_seconds(session: int) -> float:
    """The user + system CPU seconds of every live process of ``session`` (a process started with
    ``start_new_session=True`` leads its own: nginx's workers count with their master); 0 without /proc."""
    total = 0
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else ():
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(b")") + 2 :].split()  # after "pid (comm) ": state, ppid, pgrp, session, ...
        if int(fields[3]) == session:
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / tick


def wrk(port: int, duration: int, connections: int, header: str | None = None) -> tuple[float, float, int]:
    """One ``wrk -t1`` run against ``port`` (with ``header`` on every request): requests/s, p99 ms and
    the number of requests served."""
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency"]
    if header:
        argv += ["-H", header]
    proc = subprocess.run([*argv, f"http://127.0.0.1:{port}/"], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed on port {port}: {proc.stderr.strip() or proc.stdout.strip()}")
    out = proc.stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    value, unit = re.search(r"99%\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
    p99_ms = float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
    served = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    if "Non-2xx" in out or "Socket errors" in out:
        print(f"  warning: errors on port {port}: {out.strip().splitlines()[-3:]}", file=sys.stderr)
    return rate, p99_ms, served


def measure(
    ports: dict[str, int],
    order: list[str],
    args: argparse.Namespace,
    headers: dict[str, str] | None = None,
    sessions: dict[str, int] | None = None,
) -> None:
    """Every target in turn, round after round (after a warm-up run each), then the table.
    ``sessions``: each target's session id (its process's pid), for the CPU column."""
    headers, sessions = headers or {}, sessions or {}
    for kind in order:  # warm up: connections, pools, caches
        wrk(ports[kind], 1, args.connections, headers.get(kind))
    rates: dict[str, list[float]] = {k: [] for k in order}
    p99s: dict[str, list[float]] = {k: [] for k in order}
    cpus: dict[str, list[float]] = {k: [] for k in order}
    for _ in range(args.rounds):
        for kind in order:
            session = sessions.get(kind)
            before = cpu_seconds(session) if session else 0.0
            rate, p99, served = wrk(ports[kind], args.duration, args.connections, headers.get(kind))
            if session and served:
                cpus[kind].append((cpu_seconds(session) - before) / served * 1e6)
            rates[kind].append(rate)
            p99s[kind].append(p99)
    print(f"\nwrk -t1 -c{args.connections}, {args.rounds} x {args.duration:g} s, one worker each", end="")
    print(f"; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}\n")
    print(f"{'target':<10} {'req/s':>10} {'x direct':>9} {'p99 ms':>8} {'CPU us/req':>11}")
    for kind in order:
        ratio = statistics.median(r / d for r, d in zip(rates[kind], rates["direct"], strict=True))
        cpu = f"{statistics.median(cpus[kind]):>11.1f}" if cpus[kind] else f"{'-':>11}"
        print(f"{kind:<10} {statistics.median(rates[kind]):>10.0f} {ratio:>9.2f} {max(p99s[kind]):>8.2f} {cpu}")


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--backend", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port, args.backend)
        return
    for tool in ("wrk", "nginx"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is not installed")
    procs: list[subprocess.Popen[bytes]] = []
    ports: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as work:
        try:
            backend = free_port()
            for kind in ("direct", "lean", "aiohttp", "httpx"):
                port = backend if kind == "direct" else free_port()
                argv = [sys.executable, __file__, "--serve", kind, "--port", str(port), "--backend", str(backend)]
                procs.append(subprocess.Popen(argv, start_new_session=True))
                wait_listening(port, procs[-1], kind)
                ports[kind] = port
            ports["nginx"] = free_port()
            conf = Path(work) / "nginx.conf"
            conf.write_text(NGINX.format(work=work, backend=backend, port=ports["nginx"]))
            procs.append(subprocess.Popen(["nginx", "-c", str(conf), "-g", "daemon off;"], start_new_session=True))
            wait_listening(ports["nginx"], procs[-1], "nginx")
            order = ["direct", "lean", "aiohttp", "httpx", "nginx"]
            measure(ports, order, args, sessions={kind: procs[i].pid for i, kind in enumerate(order)})
        finally:
            stop(procs)


if __name__ == "__main__":
    main()

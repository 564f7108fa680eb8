"""What a proxied request costs in Python alone: the server protocol, the stack and the upstream
client run in one process over in-memory transports (no sockets, no system calls, no other process).

    python bench/bench_gateway_python.py [--requests 30000] [--rounds 5] [--connections 32]

Each target runs in a fresh process on uvloop with asgi-apim's httptools protocol (the one
``asgi-apim serve`` and ``gateway`` use). ``--connections`` client connections each send the
request ``wrk`` sends in `bench_gateway_stack.py` (the certificate header, url-encoded PEM) again as
soon as the response is whole; a proxied request's backend answers on the next pass of the event
loop with the bare backend's response. Targets:

- ``null``: an ASGI app that answers at once (what the server protocol costs);
- ``direct``: the bare Starlette backend of `bench_gateway.py`;
- ``lean``: `bench_gateway.py`'s minimal proxy over the gateway's upstream client;
- ``protect(lean)``: that proxy inside `asgi_apim.protect` with the gateway's configuration
  (the cached certificate, tier Gold in memory, RateLimit headers);
- ``gateway``: what ``asgi-apim gateway`` serves for the same configuration.

Prints the median µs of CPU per request over ``--rounds`` alternating rounds and the spread.
The medians are steady to about ±0.5 µs run to run (one round can read high on a busy machine),
where the socket benchmarks move by tens of µs: read the differences between rows, not the rows
as a throughput.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TARGETS = ("null", "direct", "lean", "protect(lean)", "gateway")
RESPONSE = (
    b"HTTP/1.1 200 OK\r\ndate: Mon, 07 Dec 2026 14:58:23 GMT\r\nserver: uvicorn\r\ncontent-length: 12\r\n"
    b"content-type: text/plain; charset=utf-8\r\n\r\nhello, world"
)


class MemoryTransport:
    """What the server protocol and the upstream client ask of a transport, in memory;
    `write` is the subclass's."""

    closing = False
    extra: dict[str, Any] = {}

    def write(self, data: bytes) -> None:
        raise NotImplementedError

    def writelines(self, data: list[bytes]) -> None:
        self.write(b"".join(data))

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.extra.get(name, default)

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    abort = close

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0


class BackendTransport(MemoryTransport):
    """The upstream connection's transport: every request written is answered on the next pass."""

    def __init__(self, loop: asyncio.AbstractEventLoop, protocol: asyncio.Protocol) -> None:
        self.loop, self.protocol = loop, protocol

    def write(self, data: bytes) -> None:
        self.loop.call_soon(self.protocol.data_received, RESPONSE)


class ClientTransport(MemoryTransport):
    """One client connection's transport: a whole response sends the next request."""

    def __init__(self, loop: asyncio.AbstractEventLoop, run: Run, n: int) -> None:
        self.loop, self.run = loop, run
        self.protocol: Any = None
        self.extra = {"peername": ("127.0.0.1", 40000 + n), "sockname": ("127.0.0.1", 8000)}

    def write(self, data: bytes) -> None:
        if data.endswith(b"hello, world"):
            self.run.answered(self)


class Run:
    """``count`` requests over the connections; done once every one of them is answered."""

    def __init__(self, loop: asyncio.AbstractEventLoop, request: bytes) -> None:
        self.loop, self.request = loop, request
        self.unsent = self.unanswered = 0
        self.done: asyncio.Future[None] = loop.create_future()

    def start(self, count: int, transports: list[ClientTransport]) -> asyncio.Future[None]:
        self.unsent, self.unanswered, self.done = count, count, self.loop.create_future()
        for t in transports[:count]:
            self.unsent -= 1
            t.protocol.data_received(self.request)
        return self.done

    def answered(self, transport: ClientTransport) -> None:
        self.unanswered -= 1
        if self.unsent > 0:
            self.unsent -= 1
            self.loop.call_soon(transport.protocol.data_received, self.request)
        elif self.unanswered == 0:
            self.done.set_result(None)


def _app(kind: str, config: str) -> Any:
    from bench.bench_gateway import backend_app, lean_proxy

    if kind == "null":

        async def null(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "http":
                headers = [(b"content-length", b"12"), (b"content-type", b"text/plain; charset=utf-8")]
                await send({"type": "http.response.start", "status": 200, "headers": headers})
                await send({"type": "http.response.body", "body": b"hello, world"})

        return null
    if kind == "direct":
        return backend_app()
    if kind == "lean":
        return lean_proxy(9)
    if kind == "protect(lean)":
        from asgi_apim import protect

        return protect(lean_proxy(9), config=config)
    os.environ["ASGI_APIM_GATEWAY"], os.environ["ASGI_APIM_CONFIG"] = "1", config
    from asgi_apim.server.app import create_app

    return create_app()  # as `asgi-apim gateway` builds it (gc.freeze included)


def one(kind: str, config: str, header: str, count: int, connections: int) -> float:
    """µs of CPU per request for ``count`` requests to ``kind``, in this process."""
    import uvloop
    from uvicorn.config import Config
    from uvicorn.server import ServerState

    from asgi_apim.server.protocols import tls_protocols

    class Loop(uvloop.Loop):  # type: ignore[misc]
        async def create_connection(self, factory: Callable[[], Any], *args: Any, **kw: Any) -> Any:
            protocol = factory()
            transport = BackendTransport(self, protocol)
            protocol.connection_made(transport)
            return transport, protocol

    request = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nX-WSO2-CLIENT-CERTIFICATE: " + header.encode() + b"\r\n\r\n"

    async def main() -> float:
        http, _ = tls_protocols("httptools", "none")
        uv = Config(_app(kind, config), http=http, loop="none", lifespan="off", access_log=False, log_level="warning")
        uv.load()
        loop = asyncio.get_running_loop()
        run, state = Run(loop, request), ServerState()
        transports = []
        for n in range(connections):
            t = ClientTransport(loop, run, n)
            t.protocol = http(config=uv, server_state=state, app_state={}, _loop=loop)
            t.protocol.connection_made(t)
            transports.append(t)
        await run.start(max(1000, count // 10), transports)  # warm: caches filled, connections pooled
        gc.collect()
        started = time.process_time()
        await run.start(count, transports)
        return (time.process_time() - started) / count * 1e6

    result: float = uvloop.run(main(), loop_factory=Loop)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=30000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--one", choices=TARGETS, help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    parser.add_argument("--header", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(one(args.one, args.config, args.header, args.requests, args.connections))
        return
    from asgi_apim.certs.pki import issue_client, make_ca
    from bench.bench_gateway_stack import CONFIG

    with tempfile.TemporaryDirectory() as work:
        client = issue_client(make_ca("bench CA"), "bench-client")
        client.write(Path(work) / "client.pem", Path(work) / "client.key")
        header = quote((Path(work) / "client.pem").read_text(), safe="")
        config = Path(work) / "deployment.toml"
        config.write_text(CONFIG.format(key=os.urandom(32).hex(), backend=9))
        results: dict[str, list[float]] = {kind: [] for kind in TARGETS}
        for r in range(args.rounds):
            for kind in TARGETS if r % 2 == 0 else TARGETS[::-1]:
                argv = [sys.executable, __file__, "--one", kind, "--config", str(config), f"--header={header}"]
                argv += ["--requests", str(args.requests), "--connections", str(args.connections)]
                out = subprocess.run(argv, capture_output=True, text=True, check=True, cwd=work).stdout
                results[kind].append(float(out.split()[-1]))
    print(f"\n{args.requests} requests x {args.rounds} rounds, {args.connections} connections, in-memory transports")
    print(f"\n{'target':15} {'CPU us/req':>10} {'spread':>13}")
    for kind, values in results.items():
        print(f"{kind:15} {statistics.median(values):10.1f} {min(values):6.1f}-{max(values):<6.1f}")


if __name__ == "__main__":
    main()

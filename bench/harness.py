"""In-process ASGI benchmark harness.

Calls each app directly (no httpx ASGITransport, which adds ~500 µs of its own),
with a fresh scope per request, round-robin between variants within one run so
that every variant sees the same machine state. Reports the median per-request
time of each variant over the rounds and its ratio to the baseline variant.
"""

from __future__ import annotations

import asyncio
import gc
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass
class Variant:
    name: str
    app: Any
    scope: Callable[[], dict[str, Any]]
    expect: int = 200


async def _receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


async def _batch(v: Variant, n: int) -> float:
    status = [0]

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            status[0] = message["status"]

    app, make = v.app, v.scope
    t0 = time.perf_counter()
    for _ in range(n):
        await app(make(), _receive, send)
    elapsed = time.perf_counter() - t0
    if status[0] != v.expect:
        raise AssertionError(f"{v.name}: status {status[0]}, expected {v.expect}")
    return elapsed / n * 1e6


async def measure(variants: list[Variant], *, n: int = 5000, rounds: int = 7, warmup: int = 500) -> dict[str, float]:
    for v in variants:
        await _batch(v, warmup)
    samples: dict[str, list[float]] = {v.name: [] for v in variants}
    gc.collect()
    for _ in range(rounds):
        for v in variants:
            samples[v.name].append(await _batch(v, n))
    return {name: statistics.median(s) for name, s in samples.items()}


def table(results: dict[str, float], baseline: str, targets: dict[str, str] | None = None) -> str:
    base = results[baseline]
    targets = targets or {}
    lines = ["| variant | µs / request | × bare | target |", "| --- | ---: | ---: | --- |"]
    for name, us in results.items():
        lines.append(f"| {name} | {us:.1f} | {us / base:.2f} | {targets.get(name, '')} |")
    return "\n".join(lines)


def run(variants: list[Variant], baseline: str, **kw: Any) -> dict[str, float]:
    return asyncio.run(measure(variants, **kw))


def scope_factory(method: str, path: str, headers: list[tuple[bytes, bytes]] | None = None, **extra: Any) -> Callable[[], dict[str, Any]]:
    template = {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1", "method": method,
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
        "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000),
    }
    template.update(extra)
    hdrs = list(headers or [])

    def make() -> dict[str, Any]:
        scope = dict(template)
        scope["headers"] = list(hdrs)
        scope["state"] = {}
        return scope

    return make

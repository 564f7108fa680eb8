"""In-process ASGI benchmark harness.

Calls each app directly (no httpx ASGITransport, which adds ~500 µs of its own),
with a fresh scope per request, round-robin between variants within one run so
that every variant sees the same machine state. Reports the median per-request
time of each variant over the rounds, and its best round, with their ratios to
the baseline variant: this VM's speed drifts by tens of percent within minutes,
and the best round (what timeit reports) is the steadier of the two. The median
of the rounds' paired ratios (each variant against the baseline in the same
round, measured milliseconds apart) cancels that drift best.

Header values are fresh bytes objects on every request, as a server makes them
(a reused bytes object keeps its hash, which would flatter any lookup keyed by
a header value); give the bare endpoint the same headers, so that it pays for
the same scope.
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


async def sample(
    variants: list[Variant], *, n: int = 2000, rounds: int = 15, warmup: int = 500
) -> dict[str, list[float]]:
    """µs per request of each variant, one sample per round."""
    for v in variants:
        await _batch(v, warmup)
    samples: dict[str, list[float]] = {v.name: [] for v in variants}
    gc.collect()
    for _ in range(rounds):
        for v in variants:
            samples[v.name].append(await _batch(v, n))
    return samples


async def measure(variants: list[Variant], **kw: Any) -> dict[str, float]:
    """The median µs per request of each variant."""
    return {name: statistics.median(s) for name, s in (await sample(variants, **kw)).items()}


def paired(samples: dict[str, list[float]], name: str, baseline: str) -> float:
    """The median over the rounds of ``name``'s time over the baseline's in the same round: each
    pair is measured a few milliseconds apart, so a drift of the machine's speed between rounds
    cancels out of every ratio."""
    return statistics.median(v / b for v, b in zip(samples[name], samples[baseline]))


def table(
    samples: dict[str, list[float]],
    baseline: str,
    targets: dict[str, str] | None = None,
    against: dict[str, str] | None = None,
) -> str:
    """Each variant against the baseline (or its own, in ``against``: a bare endpoint on the same
    route, Starlette's routing costing more for each route it tries first): the ratio of medians,
    the median of the rounds' paired ratios, and the ratio of the best rounds."""
    med = {name: statistics.median(s) for name, s in samples.items()}
    low = {name: min(s) for name, s in samples.items()}
    targets = targets or {}
    against = against or {}
    lines = [
        "| variant | µs / request (median) | × bare (median) | × bare (paired rounds) | × bare (best round) | target |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for name in samples:
        base = against.get(name, baseline)
        label = name if base == baseline else f"{name} (× {base})"
        lines.append(
            f"| {label} | {med[name]:.1f} | {med[name] / med[base]:.2f} | {paired(samples, name, base):.2f} "
            f"| {low[name] / low[base]:.2f} | {targets.get(name, '')} |"
        )
    return "\n".join(lines)


def run(variants: list[Variant], **kw: Any) -> dict[str, list[float]]:
    return asyncio.run(sample(variants, **kw))


def scope_factory(
    method: str, path: str, headers: list[tuple[bytes, bytes]] | None = None, **extra: Any
) -> Callable[[], dict[str, Any]]:
    template = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    template.update(extra)
    hdrs = list(headers or [])

    def make() -> dict[str, Any]:
        scope = dict(template)
        scope["headers"] = [(name, bytes(memoryview(value))) for name, value in hdrs]  # fresh values, as from a server
        scope["state"] = {}
        return scope

    return make

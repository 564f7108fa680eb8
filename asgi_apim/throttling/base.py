"""What every engine shares: a `Limit`, the `Verdict` of one charge, the `Engine` protocol.

`asgi_apim.throttling.engine` holds the engines in memory and over `limits`'
storages, `asgi_apim.throttling.redis_script` the one-script Redis engine;
`asgi_apim.throttling.engine.build_engine` picks one for a storage.
"""

from __future__ import annotations

from collections.abc import Sequence
from math import ceil
from typing import NamedTuple, Protocol

from limits import RateLimitItem


class Limit:
    """One limit of one level, resolved at start-up."""

    __slots__ = (
        "level",
        "tier",
        "item",
        "code",
        "policy",
        "shared",
        "report",
        "amount",
        "expiry",
        "_prefix",
        "_suffix",
    )

    def __init__(
        self,
        *,
        level: str,
        tier: str,
        item: RateLimitItem,
        code: int,
        policy: str,
        shared: str | None = None,
        report: bool = False,
    ) -> None:
        self.level = level  # "api" | "resource" | "subscription"
        self.tier = tier
        self.item = item
        self.code = code
        self.policy = policy  # its name in the RateLimit headers
        self.shared = shared  # the identifier of a shared (API or resource) count; None: per caller
        self.report = report  # advertised on successful responses
        self.amount = item.amount
        self.expiry = item.get_expiry()
        self._prefix, _, self._suffix = item.key_for("\x00").partition("\x00")

    def key(self, ident: str) -> str:
        """``item.key_for(ident)`` without its per-call work: the storage key `limits` uses."""
        return self._prefix + ident + self._suffix

    def around(self, prefix: str) -> tuple[str, str]:
        """``(head, tail)``: the key of ``prefix + caller`` is ``head + caller + tail``."""
        return self._prefix + prefix, self._suffix

    def __repr__(self) -> str:
        return f"Limit({self.level}, {self.tier}, {self.item})"


class Verdict(NamedTuple):
    failed: Limit | None  # the exhausted limit; None: every limit was charged
    retry_after: int  # seconds, when refused
    windows: Sequence[float]  # remaining, seconds to reset: for each reported limit, in order


TAKEN = Verdict(None, 0, ())


class Engine(Protocol):
    remote: bool

    async def acquire(self, limits: Sequence[Limit], ids: Sequence[str], report: bool) -> Verdict: ...

    async def aclose(self) -> None: ...


def refused(limit: Limit, retry_after: float) -> Verdict:
    return Verdict(limit, max(1, ceil(retry_after)), ())

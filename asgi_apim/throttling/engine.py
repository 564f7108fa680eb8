"""Counting: one call takes every limit of a request, all or nothing.

A request is charged against several limits at once (its API's, its
resource's, its caller's). `Engine.acquire` takes them together: when one is
exhausted none is charged, and the answer carries what the headers need
(remaining, seconds to reset) in the same call. Three engines:

- `MemoryEngine`: our `LazyMemoryStorage`, one synchronous call for all the
  limits (nothing awaits, so it is atomic on the event loop); `MemoryEngine.bind`
  works out a plan's keys once, so a request only adds its caller's part, and
  a plan of one limit is checked and taken in a single step;
- `asgi_apim.throttling.redis_script.RedisScriptEngine`: one Lua script, one
  round trip per request (one per limit on Redis Cluster, where a request's
  keys live in different slots);
- `StrategyEngine`: `limits.aio.strategies` over any other `limits` async
  storage (``async+memory://``, memcached, MongoDB): test every limit, then hit.

All three keep `limits`' key layout, so `limits`' own strategies read the same counts.
`Limit`, `Verdict` and the `Engine` protocol they share live in
`asgi_apim.throttling.base`, and are importable from here too.

`open_storage` turns a storage URI into a storage: ``memory://`` is our
`LazyMemoryStorage`, ``async+memory://`` `limits`' own; Redis storages get
short socket timeouts and a single immediate retry unless the URI says
otherwise, so an absent Redis answers in milliseconds instead of hanging.
"""

from __future__ import annotations

import asyncio
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

from limits.aio.storage import Storage
from limits.aio.strategies import STRATEGIES, RateLimiter
from limits.errors import ConfigurationError, StorageError

from asgi_apim._redact import redact
from asgi_apim.errors import ConfigError
from asgi_apim.throttling.base import TAKEN, Engine, Limit, Verdict, refused
from asgi_apim.throttling.redis_script import RedisScriptEngine
from asgi_apim.throttling.storage import LazyMemoryStorage

__all__ = [
    "STORAGE_ERRORS",
    "TAKEN",
    "Engine",
    "Limit",
    "MemoryEngine",
    "OneLimit",
    "StorageGuard",
    "StrategyEngine",
    "Verdict",
    "build_engine",
    "open_storage",
    "refused",
]

logger = logging.getLogger("asgi_apim.throttling")

REDIS_SOCKET_TIMEOUT = 0.5
STORAGE_TIMEOUT = 1.0


_KEY_MEMO = 65_536  # callers whose storage key a single-limit plan remembers


class OneLimit:
    """A plan of one limit counted per caller, charged in memory: the usual plan.

    ``take(caller)`` checks and takes it in one step, answering what
    `LazyMemoryStorage.acquire_all` answers. Each caller's storage key
    (``head + caller + tail``) is made once and remembered in ``keys``
    (bounded): a server makes a new string per request, and the remembered key
    carries its hash. The security stage's fast path reads ``charge``,
    ``amount``, ``expiry`` and ``keys`` to charge without calling ``take``."""

    __slots__ = ("charge", "amount", "expiry", "head", "tail", "keys")

    def __init__(self, charge: Callable[[str, int, int, float], list[float]], limit: Limit, prefix: str) -> None:
        self.charge = charge  # the storage's one-limit step, ``charge(key, amount, expiry, now)``
        self.amount = limit.amount
        self.expiry = limit.expiry
        self.head, self.tail = limit.around(prefix)
        self.keys: dict[str, str] = {}

    def key(self, caller: str) -> str:
        """The storage key of ``caller``'s count, made and remembered."""
        keys = self.keys
        if len(keys) >= _KEY_MEMO:
            keys.clear()
        key = keys[caller] = self.head + caller + self.tail
        return key

    def take(self, caller: str) -> list[float]:
        return self.charge(self.keys.get(caller) or self.key(caller), self.amount, self.expiry, time.time())


class SynchronousSupport(ABC):
    """Capability of an engine whose counts live in this process: a plan is charged without
    awaiting (as `limits` declares ``MovingWindowSupport`` on the storages that have it)."""

    @abstractmethod
    def one(self, limits: Sequence[Limit], prefix: str) -> OneLimit | None:
        """The `OneLimit` of a plan of ``limits`` when it is one, counted per caller; else None."""

    @abstractmethod
    def bind(self, limits: Sequence[Limit], prefix: str) -> Callable[[str], list[float]]:
        """The synchronous charge of a plan of ``limits``: ``take(caller)``."""

    @abstractmethod
    def take_ids(self, limits: Sequence[Limit], ids: Sequence[str]) -> list[float]:
        """The synchronous charge of ``limits`` counted under ``ids`` (one each), answering what
        ``take`` answers: for plans whose counts are not all the caller's or shared."""


class MemoryEngine(SynchronousSupport):
    """`LazyMemoryStorage`, every limit of a request in one synchronous call."""

    remote = False

    def __init__(self, storage: LazyMemoryStorage, strategy: str) -> None:
        self.storage = storage
        self.strategy = strategy

    async def acquire(self, limits: Sequence[Limit], ids: Sequence[str], report: bool) -> Verdict:
        result = self.storage.acquire_all(
            self.strategy,
            [
                (limit.key(ident), limit.amount, limit.expiry, report and limit.report)
                for limit, ident in zip(limits, ids)
            ],
        )
        if result[0]:
            return refused(limits[int(result[0]) - 1], result[1])
        return Verdict(None, 0, result[1:]) if report else TAKEN

    def one(self, limits: Sequence[Limit], prefix: str) -> OneLimit | None:
        """The `OneLimit` of a plan of ``limits`` when it is one, counted per caller; else None."""
        if len(limits) != 1 or limits[0].shared is not None:
            return None
        return OneLimit(self.storage.charger(self.strategy), limits[0], prefix)

    def take_ids(self, limits: Sequence[Limit], ids: Sequence[str]) -> list[float]:
        return self.storage.acquire_all(
            self.strategy,
            [(limit.key(ident), limit.amount, limit.expiry, limit.report) for limit, ident in zip(limits, ids)],
        )

    def bind(self, limits: Sequence[Limit], prefix: str) -> Callable[[str], list[float]]:
        """The synchronous charge of one plan: ``take(caller)`` is `acquire` of ``limits`` with the ids
        ``limit.shared or prefix + caller``, its answer `LazyMemoryStorage.acquire_all`'s list.
        Everything but the caller's part of each key is worked out here, once."""
        one = self.one(limits, prefix)
        if one is not None:
            return one.take
        storage, strategy = self.storage, self.strategy
        shared = limits[0].shared if len(limits) == 1 else None
        if shared is not None:  # one shared count
            limit = limits[0]
            charge, shared_key, amount, expiry = (
                storage.charger(strategy),
                limit.key(shared),
                limit.amount,
                limit.expiry,
            )
            return lambda caller: charge(shared_key, amount, expiry, time.time())
        static = [
            (
                limit.key(limit.shared) if limit.shared is not None else None,
                *limit.around(prefix),
                limit.amount,
                limit.expiry,
                limit.report,
            )
            for limit in limits
        ]
        return lambda caller: storage.acquire_all(
            strategy,
            [
                (key or head + caller + tail, amount, expiry, report)
                for key, head, tail, amount, expiry, report in static
            ],
        )

    async def aclose(self) -> None:
        return None


class StrategyEngine:
    """`limits`' strategies over any async storage; a key is charged only if all pass the test."""

    def __init__(self, storage: Storage, strategy: str, *, timeout: float | None = None) -> None:
        self.storage = storage
        # STRATEGIES holds the three concrete strategies, typed by their abstract base
        self.limiter: RateLimiter = STRATEGIES[strategy](storage)  # type: ignore[abstract]  # limits' strategies are concrete; typeshed marks the base abstract
        self.remote = True
        self.timeout = timeout

    async def acquire(self, limits: Sequence[Limit], ids: Sequence[str], report: bool) -> Verdict:
        try:
            if self.timeout is None:
                return await self._acquire(limits, ids, report)
            async with asyncio.timeout(self.timeout):
                return await self._acquire(limits, ids, report)
        except (StorageError, TimeoutError):
            raise
        except Exception as exc:  # any failure of the storage: its client's own exception classes included
            raise StorageError(exc) from exc

    async def _acquire(self, limits: Sequence[Limit], ids: Sequence[str], report: bool) -> Verdict:
        limiter = self.limiter
        if len(limits) > 1:
            for limit, ident in zip(limits, ids):
                if not await limiter.test(limit.item, ident):
                    return await self._refused(limit, ident)
        for limit, ident in zip(limits, ids):
            if not await limiter.hit(limit.item, ident):
                return await self._refused(limit, ident)
        if not report:
            return TAKEN
        windows: list[float] = []
        for limit, ident in zip(limits, ids):
            if limit.report:
                stats = await limiter.get_window_stats(limit.item, ident)
                windows += (stats.remaining, stats.reset_time - time.time())
        return Verdict(None, 0, windows)

    async def _refused(self, limit: Limit, ident: str) -> Verdict:
        stats = await self.limiter.get_window_stats(limit.item, ident)
        return refused(limit, stats.reset_time - time.time())

    async def aclose(self) -> None:
        return None


def open_storage(uri: str) -> Storage:
    """A `limits` async storage for ``uri``; `ConfigError` naming ``throttling.storage`` if it cannot be."""
    scheme, sep, rest = uri.partition("://")
    scheme = scheme.lower()
    if not sep:
        raise ConfigError(
            "throttling.storage", f"{redact(uri)!r} is not a storage URI such as memory:// or redis://host:6379/0"
        )
    if scheme in ("memory", "lazymemory", "async+lazymemory"):
        return LazyMemoryStorage()
    name = scheme if scheme.startswith("async+") else f"async+{scheme}"
    options: dict[str, Any] = {}  # keyword arguments of the storage's client
    if "redis" in name or "valkey" in name:
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        options = {
            "socket_timeout": REDIS_SOCKET_TIMEOUT,
            "socket_connect_timeout": REDIS_SOCKET_TIMEOUT,
            "retry": Retry(NoBackoff(), 1),
        }
        if "redis" in name:
            options["implementation"] = "redispy"
    from limits.storage import storage_from_string

    try:
        storage = storage_from_string(f"{name}://{rest}", wrap_exceptions=True, **options)
    except (ConfigurationError, ImportError, ValueError, TypeError) as exc:
        raise ConfigError("throttling.storage", redact(uri, f"{uri}: {exc}")) from None
    if not isinstance(storage, Storage):
        raise ConfigError("throttling.storage", f"{redact(uri)} is not an asynchronous storage")
    return storage


def build_engine(storage: str | Storage, strategy: str) -> Engine:
    if strategy not in STRATEGIES:
        raise ConfigError("throttling.strategy", f"must be one of {', '.join(STRATEGIES)} (got {strategy!r})")
    backend = open_storage(storage) if isinstance(storage, str) else storage
    if isinstance(backend, LazyMemoryStorage):
        return MemoryEngine(backend, strategy)
    if RedisScriptEngine.supports(backend):
        return RedisScriptEngine(backend, strategy, timeout=STORAGE_TIMEOUT)
    return StrategyEngine(backend, strategy, timeout=STORAGE_TIMEOUT)


STORAGE_ERRORS: tuple[type[BaseException], ...] = (StorageError, OSError, TimeoutError, ConnectionError)


class StorageGuard:
    """Remembers that the storage is away, for ``retry_interval`` seconds, and says so in the log
    at most once every ``log_interval`` seconds. Recovery is the first call that succeeds."""

    def __init__(self, *, retry_interval: float = 0.5, log_interval: float = 10.0) -> None:
        self.retry_interval = retry_interval
        self.log_interval = log_interval
        self.down_until = 0.0
        self.down = False
        self._logged = 0.0
        self._suppressed = 0

    def available(self) -> bool:
        return not self.down or time.monotonic() >= self.down_until

    def failed(self, exc: BaseException | None, *, fail_open: bool) -> None:
        now = time.monotonic()
        self.down = True
        if exc is not None:
            self.down_until = now + self.retry_interval
        if now - self._logged >= self.log_interval:
            what = "letting requests through" if fail_open else "answering 503"
            reason = f"{type(exc).__name__}: {exc}"[:200] if exc is not None else "still away"
            extra = f" ({self._suppressed} more since the last message)" if self._suppressed else ""
            logger.warning("throttling storage unavailable, %s: %s%s", what, reason, extra)
            self._logged = now
            self._suppressed = 0
        else:
            self._suppressed += 1

    def recovered(self) -> None:
        if self.down:
            self.down = False
            self._logged = 0.0
            self._suppressed = 0
            logger.warning("throttling storage is back")

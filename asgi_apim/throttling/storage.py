"""An in-memory `limits` storage whose per-call cost does not grow with the number of keys.

`limits`' own memory storage expires keys with a background task that walks
*every* key (and, for the moving window, hands each one to a thread) whenever
a hit finds the previous walk finished: with 100k live keys that walk
dominates the event loop. `LazyMemoryStorage` implements the same interface
(`Storage`, `MovingWindowSupport`, `SlidingWindowCounterSupport`; scheme
``async+lazymemory://``, and what ``memory://`` means in asgi-apim) with:

- per-key expiry checked on access: a key past its deadline reads as empty;
- an amortised sweep: keys wait in one-second buckets of their deadline (a
  timing wheel); every call takes at most `SWEEP_BATCH` keys out of the
  oldest due bucket, drops those still expired and re-files those whose
  deadline moved on. Memory is reclaimed without ever walking the key space,
  and a call costs the same with 10 keys or 10 million.

`acquire_all` takes every limit of a request at once, all or nothing, and
`charger` gives the one-limit case as a single synchronous step (what the
middleware calls for most requests). Nothing here awaits, so each operation
is atomic on the event loop: no locks.
"""

from __future__ import annotations

import heapq
import itertools
import time
from bisect import bisect_left
from collections.abc import Callable, Sequence
from math import ceil, floor, inf
from typing import TypeVar

from limits.aio.storage import MovingWindowSupport, SlidingWindowCounterSupport, Storage

SWEEP_BATCH = 4
GRAIN = 1.0  # seconds per bucket of the timing wheel


class _Entry:
    __slots__ = ("deadline",)

    def __init__(self) -> None:
        self.deadline = 0.0


class _Counter(_Entry):
    __slots__ = ("count",)

    def __init__(self) -> None:
        super().__init__()
        self.count = 0


class _Events(_Entry):
    """Moving window: acquisition times, oldest first, from ``times[start]`` on."""

    __slots__ = ("times", "start")

    def __init__(self) -> None:
        super().__init__()
        self.times: list[float] = []
        self.start = 0

    def prune(self, cutoff: float) -> int:
        """Forget the times before ``cutoff``; the number left."""
        times, start = self.times, self.start
        if start < len(times) and times[start] < cutoff:
            start = bisect_left(times, cutoff, start)
            if start == len(times):
                times.clear()
                start = 0
            elif start > 32 and start * 2 > len(times):
                del times[:start]
                start = 0
            self.start = start
        return len(times) - start


class _Sliding(_Entry):
    """Sliding window counter: the current and previous fixed windows of one key."""

    __slots__ = ("window", "previous", "current")

    def __init__(self) -> None:
        super().__init__()
        self.window = -2
        self.previous = 0
        self.current = 0

    def roll(self, window: int) -> None:
        if window != self.window:
            self.previous = self.current if window == self.window + 1 else 0
            self.current = 0
            self.window = window


_E = TypeVar("_E", bound=_Entry)


class LazyMemoryStorage(Storage, MovingWindowSupport, SlidingWindowCounterSupport):
    STORAGE_SCHEME = ["async+lazymemory"]

    def __init__(self, uri: str | None = None, wrap_exceptions: bool = False, **options: float | str | bool) -> None:
        self._entries: dict[str, _Entry] = {}
        self._buckets: dict[int, list[tuple[str, _Entry]]] = {}
        self._due: list[int] = []  # heap of the buckets' numbers
        self._sweep_at = inf  # when the oldest bucket is due
        super().__init__(uri, wrap_exceptions=wrap_exceptions, **options)

    @property
    def base_exceptions(self) -> type[Exception] | tuple[type[Exception], ...]:
        return ()

    def __len__(self) -> int:
        return len(self._entries)

    def _file(self, key: str, entry: _Entry, deadline: float) -> None:
        number = ceil(deadline / GRAIN)
        bucket = self._buckets.get(number)
        if bucket is None:
            bucket = self._buckets[number] = []
            heapq.heappush(self._due, number)
            self._sweep_at = self._due[0] * GRAIN
        bucket.append((key, entry))

    def _sweep(self, now: float) -> None:
        due, buckets, entries = self._due, self._buckets, self._entries
        for _ in range(SWEEP_BATCH):
            if not due or due[0] * GRAIN > now:
                break
            bucket = buckets[due[0]]
            if not bucket:
                del buckets[heapq.heappop(due)]
                continue
            key, entry = bucket.pop()
            if entries.get(key) is not entry:
                continue
            if entry.deadline <= now:
                del entries[key]
            else:
                self._file(key, entry, entry.deadline)
        self._sweep_at = due[0] * GRAIN if due else inf

    def _entry(self, key: str, kind: type[_E], now: float) -> _E:
        entry = self._entries.get(key)
        if isinstance(entry, kind):
            return entry
        new = self._entries[key] = kind()
        self._file(key, new, now + GRAIN)
        return new

    # ---------------------------------------------------- every limit at once

    def acquire_one(self, strategy: str, key: str, limit: int, expiry: int) -> list[float]:
        """`acquire_all` of a single limit, checked and taken in one step (the common request)."""
        return self.charger(strategy)(key, limit, expiry, time.time())

    def charger(self, strategy: str) -> Callable[[str, int, int, float], list[float]]:
        """`acquire_one` of ``strategy`` as a function of ``(key, limit, expiry, now)``, looked up
        once: the caller reads the clock (the security stage's fast path has read it already)."""
        charges = {
            "fixed-window": self._fixed_one,
            "moving-window": self._moving_one,
            "sliding-window-counter": self._sliding_one,
        }
        return charges[strategy]

    def acquire_all(self, strategy: str, requests: Sequence[tuple[str, int, int, bool]]) -> list[float]:
        """Take one hit on every ``(key, limit, expiry, report)``, or on none of them.

        Returns ``[0, remaining, reset, ...]`` (seconds; for the reported ones) when all
        were taken, ``[i, retry_after]`` when the i-th (from 1) is exhausted. The key
        layout and the arithmetic are those of the `limits` strategy of that name.
        """
        now = time.time()
        if now >= self._sweep_at:
            self._sweep(now)
        check, take = _OPERATIONS[strategy]
        for i, (key, limit, expiry, _) in enumerate(requests, 1):
            retry = check(self, key, limit, expiry, now)
            if retry is not None:
                return [i, retry]
        out: list[float] = [0]
        for key, limit, expiry, report in requests:
            remaining, reset = take(self, key, limit, expiry, now)
            if report:
                out += (remaining, reset)
        return out

    def _counter(self, key: str, expiry: int, now: float) -> _Counter:
        entry = self._entry(key, _Counter, now)
        if entry.deadline <= now:
            entry.count = 0
            entry.deadline = now + expiry
        return entry

    def _fixed_one(self, key: str, limit: int, expiry: int, now: float) -> list[float]:
        if now >= self._sweep_at:
            self._sweep(now)
        entry = self._entries.get(key)
        if isinstance(entry, _Counter) and entry.deadline > now:
            if entry.count >= limit:
                return [1, entry.deadline - now]
        elif limit < 1:
            return [1, float(expiry)]
        else:
            entry = self._counter(key, expiry, now)
        entry.count += 1
        return [0, limit - entry.count, entry.deadline - now]

    def _moving_one(self, key: str, limit: int, expiry: int, now: float) -> list[float]:
        if now >= self._sweep_at:
            self._sweep(now)
        entry = self._entries.get(key)
        if not isinstance(entry, _Events):
            if limit < 1:  # nothing to count, no entry made (tested here, off the usual path)
                return [1, float(expiry)]
            entry = self._entry(key, _Events, now)
        times, start = entry.times, entry.start
        if start < len(times) and times[start] < now - expiry:  # prune only when something expired
            entry.prune(now - expiry)
            start = entry.start
        count = len(times) - start
        if count >= limit:
            return [1, times[len(times) - limit] + expiry - now] if limit >= 1 else [1, float(expiry)]
        times.append(now)
        entry.deadline = now + expiry
        return [0, limit - count - 1, times[start] + expiry - now]

    def _sliding_one(self, key: str, limit: int, expiry: int, now: float) -> list[float]:
        if limit < 1:
            return [1, float(expiry)]
        if now >= self._sweep_at:
            self._sweep(now)
        entry = self._entries.get(key)
        if not isinstance(entry, _Sliding):
            entry = self._entry(key, _Sliding, now)
        previous, previous_ttl, current, current_ttl = self._window(entry, expiry, now)
        if floor(previous * previous_ttl / expiry + current) >= limit:
            return [1, _sliding_reset(previous, previous_ttl, current, current_ttl, expiry)]
        entry.current = current = current + 1
        entry.deadline = (entry.window + 2) * expiry
        return [
            0,
            limit - floor(previous * previous_ttl / expiry + current),
            _sliding_reset(previous, previous_ttl, current, current_ttl, expiry),
        ]

    def _fixed_check(self, key: str, limit: int, expiry: int, now: float) -> float | None:
        entry = self._entries.get(key)
        if isinstance(entry, _Counter) and entry.deadline > now:
            return entry.deadline - now if entry.count >= limit else None
        return None if limit >= 1 else float(expiry)

    def _fixed_take(self, key: str, limit: int, expiry: int, now: float) -> tuple[int, float]:
        entry = self._counter(key, expiry, now)
        entry.count += 1
        return limit - entry.count, entry.deadline - now

    def _moving_check(self, key: str, limit: int, expiry: int, now: float) -> float | None:
        if limit < 1:
            return float(expiry)
        entry = self._entries.get(key)
        if isinstance(entry, _Events) and entry.prune(now - expiry) >= limit:
            return entry.times[len(entry.times) - limit] + expiry - now
        return None

    def _moving_take(self, key: str, limit: int, expiry: int, now: float) -> tuple[int, float]:
        entry = self._entry(key, _Events, now)
        count = entry.prune(now - expiry) + 1
        entry.times.append(now)
        entry.deadline = now + expiry
        return limit - count, entry.times[entry.start] + expiry - now

    def _sliding_check(self, key: str, limit: int, expiry: int, now: float) -> float | None:
        if limit < 1:
            return float(expiry)
        entry = self._entries.get(key)
        if not isinstance(entry, _Sliding):
            return None
        previous, previous_ttl, current, current_ttl = self._window(entry, expiry, now)
        if floor(previous * previous_ttl / expiry + current) >= limit:
            return _sliding_reset(previous, previous_ttl, current, current_ttl, expiry)
        return None

    def _sliding_take(self, key: str, limit: int, expiry: int, now: float) -> tuple[int, float]:
        entry = self._entry(key, _Sliding, now)
        previous, previous_ttl, current, current_ttl = self._window(entry, expiry, now)
        entry.current = current = current + 1
        entry.deadline = (entry.window + 2) * expiry
        weighted = floor(previous * previous_ttl / expiry + current)
        return limit - weighted, _sliding_reset(previous, previous_ttl, current, current_ttl, expiry)

    # ------------------------------------------------------------ fixed window

    async def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        now = time.time()
        if now >= self._sweep_at:
            self._sweep(now)
        entry = self._counter(key, expiry, now)
        entry.count += amount
        return entry.count

    async def get(self, key: str) -> int:
        entry = self._entries.get(key)
        if isinstance(entry, _Counter) and entry.deadline > time.time():
            return entry.count
        return 0

    async def get_expiry(self, key: str) -> float:
        now = time.time()
        entry = self._entries.get(key)
        return entry.deadline if isinstance(entry, _Counter) and entry.deadline > now else now

    async def check(self) -> bool:
        return True

    async def reset(self) -> int | None:
        count = len(self._entries)
        self._entries.clear()
        self._buckets.clear()
        self._due.clear()
        self._sweep_at = inf
        return count

    async def clear(self, key: str) -> None:
        self._entries.pop(key, None)

    # ----------------------------------------------------------- moving window

    async def acquire_entry(self, key: str, limit: int, expiry: int, amount: int = 1) -> bool:
        if amount > limit:
            return False
        now = time.time()
        if now >= self._sweep_at:
            self._sweep(now)
        entry = self._entry(key, _Events, now)
        if entry.prune(now - expiry) + amount > limit:
            return False
        entry.times.extend(itertools.repeat(now, amount))
        entry.deadline = now + expiry
        return True

    async def get_moving_window(self, key: str, limit: int, expiry: int) -> tuple[float, int]:
        now = time.time()
        entry = self._entries.get(key)
        if isinstance(entry, _Events):
            count = entry.prune(now - expiry)
            if count:
                return entry.times[entry.start], count
        return now, 0

    # -------------------------------------------------- sliding window counter

    @staticmethod
    def _ttls(expiry: int, now: float) -> tuple[float, float]:
        # The same arithmetic as limits' own memory storage, so both agree to the last bit.
        return (1 - (((now - expiry) / expiry) % 1)) * expiry, (1 - ((now / expiry) % 1)) * expiry + expiry

    def _window(self, entry: _Sliding, expiry: int, now: float) -> tuple[int, float, int, float]:
        entry.roll(int(now / expiry))
        previous_ttl, current_ttl = self._ttls(expiry, now)
        return entry.previous, previous_ttl if entry.previous else 0.0, entry.current, current_ttl

    async def acquire_sliding_window_entry(self, key: str, limit: int, expiry: int, amount: int = 1) -> bool:
        if amount > limit:
            return False
        now = time.time()
        if now >= self._sweep_at:
            self._sweep(now)
        entry = self._entry(key, _Sliding, now)
        previous, previous_ttl, current, _ = self._window(entry, expiry, now)
        if floor(previous * previous_ttl / expiry + current) + amount > limit:
            return False
        entry.current += amount
        entry.deadline = (entry.window + 2) * expiry
        return True

    async def get_sliding_window(self, key: str, expiry: int) -> tuple[int, float, int, float]:
        now = time.time()
        entry = self._entries.get(key)
        if not isinstance(entry, _Sliding) or entry.deadline <= now:
            return 0, 0.0, 0, self._ttls(expiry, now)[1]
        return self._window(entry, expiry, now)

    async def clear_sliding_window(self, key: str, expiry: int) -> None:
        self._entries.pop(key, None)


def _sliding_reset(previous: int, previous_ttl: float, current: int, current_ttl: float, expiry: int) -> float:
    """Seconds until the weighted count next drops: the previous window's next hit fading, or the rotation."""
    reset = previous_ttl % (expiry / previous) if previous else inf
    if current:
        reset = min(reset, current_ttl - expiry if current_ttl > expiry else current_ttl)
    return 0.0 if reset == inf else reset


_OPERATIONS = {
    "fixed-window": (LazyMemoryStorage._fixed_check, LazyMemoryStorage._fixed_take),
    "moving-window": (LazyMemoryStorage._moving_check, LazyMemoryStorage._moving_take),
    "sliding-window-counter": (LazyMemoryStorage._sliding_check, LazyMemoryStorage._sliding_take),
}

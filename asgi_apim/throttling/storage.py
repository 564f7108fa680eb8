"""An in-memory `limits` storage whose per-call cost does not grow with the number of keys.

`limits`' own memory storage expires keys with a background task that walks
*every* key (and, for the moving window, hands each one to a thread) whenever
a hit finds the previous walk finished: with 100k live keys that walk
dominates the event loop. `LazyMemoryStorage` implements the same interface
(`Storage`, `MovingWindowSupport`, `SlidingWindowCounterSupport`; scheme
``async+lazymemory://``, and what ``memory://`` means in asgi-apim) with:

- per-key expiry checked on access: a key past its deadline reads as empty;
- an amortised sweep: every call pops at most `SWEEP_BATCH` due entries off a
  heap of deadlines (one heap entry per live key), so memory is reclaimed
  without ever walking the whole key space.

Nothing here awaits, so each operation is atomic on the event loop: no locks.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections import deque
from math import floor

from limits.aio.storage import MovingWindowSupport, SlidingWindowCounterSupport, Storage

SWEEP_BATCH = 4


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
    """Moving window: acquisition times, oldest first."""

    __slots__ = ("times",)

    def __init__(self) -> None:
        super().__init__()
        self.times: deque[float] = deque()

    def prune(self, cutoff: float) -> deque[float]:
        times = self.times
        while times and times[0] < cutoff:
            times.popleft()
        return times


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


class LazyMemoryStorage(Storage, MovingWindowSupport, SlidingWindowCounterSupport):
    STORAGE_SCHEME = ["async+lazymemory"]

    def __init__(self, uri: str | None = None, wrap_exceptions: bool = False, **options: float | str | bool) -> None:
        self._entries: dict[str, _Entry] = {}
        self._heap: list[tuple[float, int, str, _Entry]] = []
        self._seq = itertools.count()
        super().__init__(uri, wrap_exceptions=wrap_exceptions, **options)

    @property
    def base_exceptions(self) -> type[Exception] | tuple[type[Exception], ...]:
        return ()

    def __len__(self) -> int:
        return len(self._entries)

    def _sweep(self, now: float) -> None:
        heap = self._heap
        for _ in range(SWEEP_BATCH):
            if not heap or heap[0][0] > now:
                return
            _, _, key, entry = heapq.heappop(heap)
            if self._entries.get(key) is not entry:
                continue
            if entry.deadline <= now:
                del self._entries[key]
            else:
                heapq.heappush(heap, (entry.deadline, next(self._seq), key, entry))

    def _entry(self, key: str, kind: type[_Entry], now: float) -> _Entry:
        self._sweep(now)
        entry = self._entries.get(key)
        if entry is None or type(entry) is not kind:
            entry = kind()
            self._entries[key] = entry
            heapq.heappush(self._heap, (now, next(self._seq), key, entry))
        return entry

    # ------------------------------------------------------------ fixed window

    async def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        now = time.time()
        entry = self._entry(key, _Counter, now)
        assert isinstance(entry, _Counter)
        if entry.deadline <= now:
            entry.count = 0
            entry.deadline = now + expiry
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
        self._heap.clear()
        return count

    async def clear(self, key: str) -> None:
        self._entries.pop(key, None)

    # ----------------------------------------------------------- moving window

    async def acquire_entry(self, key: str, limit: int, expiry: int, amount: int = 1) -> bool:
        if amount > limit:
            return False
        now = time.time()
        entry = self._entry(key, _Events, now)
        assert isinstance(entry, _Events)
        times = entry.prune(now - expiry)
        if len(times) + amount > limit:
            return False
        if amount == 1:
            times.append(now)
        else:
            times.extend(itertools.repeat(now, amount))
        entry.deadline = now + expiry
        return True

    async def get_moving_window(self, key: str, limit: int, expiry: int) -> tuple[float, int]:
        now = time.time()
        entry = self._entries.get(key)
        if isinstance(entry, _Events):
            times = entry.prune(now - expiry)
            if times:
                return times[0], len(times)
        return now, 0

    # -------------------------------------------------- sliding window counter

    def _window(self, entry: _Sliding, expiry: int, now: float) -> tuple[int, float, int, float]:
        window = int(now // expiry)
        entry.roll(window)
        into = now - window * expiry
        previous_ttl = expiry - into if entry.previous else 0.0
        return entry.previous, previous_ttl, entry.current, 2 * expiry - into

    async def acquire_sliding_window_entry(self, key: str, limit: int, expiry: int, amount: int = 1) -> bool:
        if amount > limit:
            return False
        now = time.time()
        entry = self._entry(key, _Sliding, now)
        assert isinstance(entry, _Sliding)
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
            into = now % expiry
            return 0, 0.0, 0, 2 * expiry - into
        return self._window(entry, expiry, now)

    async def clear_sliding_window(self, key: str, expiry: int) -> None:
        self._entries.pop(key, None)

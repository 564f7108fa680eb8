from __future__ import annotations

import random
import statistics
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from limits import RateLimitItemPerSecond
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import STRATEGIES
from limits.storage import storage_from_string

from asgi_apim.throttling.storage import SWEEP_BATCH, LazyMemoryStorage
from tests.throttling.conftest import Clock

ALL = sorted(STRATEGIES)


def test_registered_under_its_own_scheme() -> None:
    assert isinstance(storage_from_string("async+lazymemory://"), LazyMemoryStorage)


@pytest.mark.parametrize("strategy", ALL)
async def test_agrees_with_limits_own_memory_storage(strategy: str, clock: Clock) -> None:
    """Same hits, same clock: every answer of ours equals limits' reference implementation."""
    rng = random.Random(f"{strategy}-4")
    ours, reference = STRATEGIES[strategy](LazyMemoryStorage()), STRATEGIES[strategy](MemoryStorage())
    items = [RateLimitItemPerSecond(5, 10), RateLimitItemPerSecond(3, 2)]
    for step in range(600):
        clock.advance(rng.choice([0, 0, 0.05, 0.3, 1.1, 4.0]))
        item, key = rng.choice(items), rng.choice(["a", "b", "c"])
        hit = await ours.hit(item, key)
        assert hit == await reference.hit(item, key), (step, item, key)
        mine, theirs = await ours.get_window_stats(item, key), await reference.get_window_stats(item, key)
        assert mine.remaining == theirs.remaining, (step, item, key)
        assert mine.reset_time == pytest.approx(theirs.reset_time, abs=1e-6), (step, item, key)
        assert await ours.test(item, key) == await reference.test(item, key)


async def test_moving_window_with_a_large_limit_agrees_with_limits(clock: Clock) -> None:
    """Bursts against a 100-per-second window: old times are forgotten (and the list compacted) exactly right."""
    rng = random.Random(7)
    ours, reference = STRATEGIES["moving-window"](LazyMemoryStorage()), STRATEGIES["moving-window"](MemoryStorage())
    item = RateLimitItemPerSecond(100, 1)
    for step in range(3000):
        clock.advance(rng.choice([0.0, 0.001, 0.01, 0.2]))
        assert await ours.hit(item, "k") == await reference.hit(item, "k"), step
        if step % 50 == 0:
            assert (await ours.get_window_stats(item, "k")) == (await reference.get_window_stats(item, "k"))


@pytest.mark.parametrize("strategy", ALL)
async def test_exhaustion_and_reset(strategy: str, clock: Clock) -> None:
    limiter = STRATEGIES[strategy](LazyMemoryStorage())
    item = RateLimitItemPerSecond(3, 2)
    clock.now = 1_700_000_000.0  # at a window boundary, so the sliding counter starts clean
    assert [await limiter.hit(item, "k") for _ in range(4)] == [True, True, True, False]
    assert (await limiter.get_window_stats(item, "k")).remaining == 0
    assert await limiter.hit(item, "other")
    clock.advance(4.01)  # two windows on: nothing of the old hits weighs any more
    assert (await limiter.get_window_stats(item, "k")).remaining == 3
    assert [await limiter.hit(item, "k") for _ in range(4)] == [True, True, True, False]


async def test_clear_and_reset() -> None:
    storage = LazyMemoryStorage()
    limiter = STRATEGIES["moving-window"](storage)
    item = RateLimitItemPerSecond(1, 60)
    assert await limiter.hit(item, "k") and not await limiter.hit(item, "k")
    await limiter.clear(item, "k")
    assert await limiter.hit(item, "k")
    assert await storage.reset() == 1 and len(storage) == 0
    assert await storage.check()


@pytest.mark.parametrize("strategy", ALL)
async def test_expired_keys_are_reclaimed_a_few_per_call(strategy: str, clock: Clock) -> None:
    storage = LazyMemoryStorage()
    limiter = STRATEGIES[strategy](storage)
    item = RateLimitItemPerSecond(10, 1)
    for i in range(200):
        await limiter.hit(item, f"idle-{i}")
    assert len(storage) == 200
    clock.advance(5)
    before = len(storage)
    await limiter.hit(item, "hot")
    assert before - len(storage) <= SWEEP_BATCH  # bounded work per call, never a walk of every key
    for _ in range(200 // SWEEP_BATCH + 10):
        await limiter.hit(item, "hot")
    assert len(storage) == 1  # only the hot key is left


async def test_lazily_expired_key_reads_as_empty_before_any_sweep(clock: Clock) -> None:
    storage = LazyMemoryStorage()
    assert await storage.incr("k", 2) == 1
    assert await storage.get("k") == 1 and await storage.get_expiry("k") == clock.now + 2
    clock.advance(2)
    assert await storage.get("k") == 0
    assert await storage.incr("k", 2) == 1


FILL = {
    "fixed-window": lambda storage, key: storage.incr(key, 60),
    "moving-window": lambda storage, key: storage.acquire_entry(key, 10, 60),
    "sliding-window-counter": lambda storage, key: storage.acquire_sliding_window_entry(key, 10, 60),
}


async def _per_call(limiter, item, calls: int = 200) -> float:  # type: ignore[no-untyped-def]
    samples = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(calls):
            await limiter.hit(item, "hot")
        samples.append((time.perf_counter() - t0) / calls)
    return statistics.median(samples)


async def _crowded(strategy: str, keys: int):  # type: ignore[no-untyped-def]
    storage = LazyMemoryStorage()
    for i in range(keys):
        await FILL[strategy](storage, f"idle-{i}")
    assert len(storage) == keys
    return storage, STRATEGIES[strategy](storage)


@pytest.mark.parametrize("strategy", ALL)
async def test_per_call_cost_is_flat_in_the_number_of_keys(strategy: str, clock: Clock) -> None:
    """A hit costs the same beside 100k live keys as beside none; and while expired keys are being
    reclaimed it costs the same whether 5k or 100k of them wait (a few per call, never a walk)."""
    item = RateLimitItemPerSecond(10**9, 60)
    empty = STRATEGIES[strategy](LazyMemoryStorage())
    few_storage, few = await _crowded(strategy, 5_000)
    many_storage, many = await _crowded(strategy, 100_000)
    await _per_call(empty, item)
    base, live = await _per_call(empty, item), await _per_call(many, item)
    assert live < base * 2, f"{strategy}: {base * 1e6:.2f} µs beside no key, {live * 1e6:.2f} beside 100k"

    clock.advance(180)
    backlog_few, backlog_many = await _per_call(few, item), await _per_call(many, item)
    assert backlog_many < backlog_few * 2, (
        f"{strategy}: {backlog_few * 1e6:.2f} µs reclaiming 5k, {backlog_many * 1e6:.2f} reclaiming 100k"
    )
    assert 0 < 100_000 - len(many_storage) <= 5 * 200 * SWEEP_BATCH
    assert len(few_storage) > 0


@pytest.mark.parametrize("strategy", ALL)
async def test_one_call_engine_agrees_with_limits(strategy: str, clock: Clock) -> None:
    """MemoryEngine (every limit of a request in one call) against limits' strategies on
    limits' own storage: same admissions, same remaining, same reset, all-or-nothing."""
    from asgi_apim.throttling.engine import Limit, MemoryEngine

    rng = random.Random(f"{strategy}-engine")
    engine = MemoryEngine(LazyMemoryStorage(), strategy)
    reference = STRATEGIES[strategy](MemoryStorage())
    items = [RateLimitItemPerSecond(5, 10), RateLimitItemPerSecond(3, 2)]
    limits = [
        Limit(level="api", tier=f"T{i}", item=item, code=900800, policy=f"p{i}", report=True)
        for i, item in enumerate(items)
    ]
    for step in range(400):
        clock.advance(rng.choice([0, 0, 0.05, 0.3, 1.1, 4.0]))
        keys = [rng.choice(["a", "b"]), rng.choice(["a", "b"])]
        expected_ok = all([await reference.test(item, key) for item, key in zip(items, keys)])
        verdict = await engine.acquire(limits, keys, True)
        assert (verdict.failed is None) == expected_ok, step
        if expected_ok:
            for item, key in zip(items, keys):
                assert await reference.hit(item, key)
            for i, (item, key) in enumerate(zip(items, keys)):
                stats = await reference.get_window_stats(item, key)
                assert verdict.windows[2 * i] == stats.remaining, (step, i)
                assert verdict.windows[2 * i + 1] == pytest.approx(stats.reset_time - clock.now, abs=1e-6), (step, i)
        else:
            passes = [await reference.test(item, key) for item, key in zip(items, keys)]
            failed = passes.index(False)
            assert verdict.failed is limits[failed]
            assert verdict.retry_after >= 1


@pytest.mark.parametrize("strategy", ALL)
@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("memo", [65_536, 1], ids=["keys-remembered", "keys-memo-cleared"])
async def test_single_limit_charge_agrees_with_all_limits_call_and_limits(
    strategy: str, shared: bool, memo: int, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A plan of one limit is charged by `MemoryEngine.bind`'s one-step path: the same answers, to the
    last bit, as `acquire_all` on a twin storage, and the same admissions and remaining as limits'
    (also when its memo of callers' keys is cleared all the time)."""
    from asgi_apim.throttling.engine import Limit, MemoryEngine

    monkeypatch.setattr("asgi_apim.throttling.engine._KEY_MEMO", memo)

    rng = random.Random(f"{strategy}-one-{shared}")
    reference = STRATEGIES[strategy](MemoryStorage())
    item = RateLimitItemPerSecond(3, 2)
    limit = Limit(
        level="api", tier="T", item=item, code=900800, policy="p", shared="api|pets" if shared else None, report=True
    )
    take = MemoryEngine(LazyMemoryStorage(), strategy).bind([limit], "sub|pets|")
    twin = LazyMemoryStorage()
    clock.advance(0.013)  # off the windows' edges, where limits' own stats disagree with its own hits
    for step in range(500):
        clock.advance(rng.choice([0, 0, 0.05, 0.3, 1.1, 4.0]))
        caller = rng.choice(["a", "b"])
        ident = "api|pets" if shared else f"sub|pets|{caller}"
        result = take(caller)
        assert result == twin.acquire_all(strategy, [(item.key_for(ident), item.amount, item.get_expiry(), True)]), step
        expected_ok = await reference.hit(item, ident)
        assert (result[0] == 0) == expected_ok, step
        if expected_ok:
            stats = await reference.get_window_stats(item, ident)
            assert result[1] == stats.remaining, step
            assert result[2] == pytest.approx(stats.reset_time - clock.now, abs=1e-6), step
        else:
            assert result[0] == 1 and result[1] > 0, step


async def test_a_limit_of_zero_refuses_every_request(clock: Clock) -> None:
    storage = LazyMemoryStorage()
    for strategy in ALL:
        assert storage.acquire_one(strategy, f"k-{strategy}", 0, 60) == [1, 60.0]
        assert storage.acquire_all(strategy, [(f"k-{strategy}", 0, 60, True)]) == [1, 60.0]
    assert len(storage) == 0


@pytest.mark.parametrize("strategy", ALL)
@settings(max_examples=150, deadline=None)
@given(
    steps=st.lists(
        st.tuples(st.sampled_from([-7.0, -1.0, -0.3, 0.0, 0.0, 0.01, 0.2, 0.9, 1.0, 2.5, 61.0]), st.integers(0, 2)),
        max_size=60,
    ),
    shape=st.tuples(st.integers(1, 4), st.integers(1, 3)),
)
def test_a_one_limit_charge_never_answers_a_negative_remaining_or_reset(
    strategy: str, steps: list[tuple[float, int]], shape: tuple[int, int]
) -> None:
    """The security stage's step renders a charge's answer without clamping it (`Limiter.charge`):
    every admission's remaining and reset are >= 0, whatever the clock does (it may step back: time.time
    is not monotonic). A refusal's wait is >= 0 (0 in a sliding window after the clock stepped back); the
    ticket makes Retry-After at least 1 s."""
    limit, expiry = shape
    charge = LazyMemoryStorage().charger(strategy)
    now = 1_700_000_000.0
    for delta, caller in steps:
        now += delta
        result = charge(f"k{caller}", limit, expiry, now)
        if result[0]:
            assert len(result) == 2 and result[1] >= 0, result
        else:
            assert len(result) == 3 and result[1] >= 0 and result[2] >= 0, result

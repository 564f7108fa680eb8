from __future__ import annotations

import math
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.throttling.redis_server import RedisServer


class Clock:
    """``time.time`` under the test's control (limits and our storage both read it).

    It starts at the next whole minute of the real time, so certificates issued
    for the test are valid and minute windows start aligned."""

    def __init__(self, start: float | None = None) -> None:
        self.now = start if start is not None else float(math.ceil(time.time() / 60) * 60)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(time, "time", c)
    return c


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path).start()
    yield server
    server.stop()

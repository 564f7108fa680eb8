"""The rate-limited log and the event loop's accept() error handler."""

from __future__ import annotations

import asyncio
import errno
import logging
from typing import Any

import pytest

from asgi_apim.server.ratelog import AcceptErrorHandler, RateLimitedLog, install_accept_log


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_one_line_per_reason_per_interval_with_the_folded_count(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    log = RateLimitedLog(logging.getLogger("test.ratelog"), interval=1.0, clock=clock)
    with caplog.at_level(logging.INFO, "test.ratelog"):
        assert log.log(logging.INFO, "a", "refused %s", "x")
        for _ in range(99):
            assert not log.log(logging.INFO, "a", "refused %s", "x")
        assert log.log(logging.INFO, "b", "other")  # another reason is not held back
        clock.now += 1.5
        assert log.log(logging.INFO, "a", "refused %s", "y")
        clock.now += 5
        assert log.log(logging.INFO, "a", "refused %s", "z")
    assert [r.getMessage() for r in caplog.records] == [
        "refused x",
        "other",
        "refused y (and 99 more like it in the last 1.5 s)",
        "refused z",
    ]


def test_a_disabled_level_costs_nothing(caplog: pytest.LogCaptureFixture) -> None:
    log = RateLimitedLog(logging.getLogger("test.ratelog.quiet"))
    with caplog.at_level(logging.WARNING, "test.ratelog.quiet"):
        assert not log.log(logging.DEBUG, "a", "hidden")
    assert caplog.records == []


def test_reasons_are_bounded() -> None:
    clock = Clock()
    log = RateLimitedLog(logging.getLogger("test.ratelog.many"), clock=clock)
    for i in range(5000):
        log.log(logging.WARNING, f"r{i}", "x")
    assert len(log._last) <= 1024


async def test_the_handler_folds_accept_errors_and_passes_the_rest_on(caplog: pytest.LogCaptureFixture) -> None:
    loop = asyncio.get_running_loop()
    seen: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: seen.append(context))
    install_accept_log(loop)
    install_accept_log(loop)  # once
    handler = loop.get_exception_handler()
    assert isinstance(handler, AcceptErrorHandler) and not isinstance(handler.previous, AcceptErrorHandler)
    emfile = OSError(errno.EMFILE, "Too many open files")
    with caplog.at_level(logging.ERROR, "asgi_apim.server"):
        for _ in range(1000):
            loop.call_exception_handler({"message": "socket.accept() out of system resource", "exception": emfile})
    lines = [r for r in caplog.records if "accept() failed" in r.getMessage()]
    assert len(lines) == 1 and "Too many open files" in lines[0].getMessage()
    other = {"message": "something else", "exception": ValueError("x")}
    loop.call_exception_handler(other)
    assert seen == [other]
    loop.set_exception_handler(None)

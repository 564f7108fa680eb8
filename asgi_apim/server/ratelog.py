"""Log lines a flood cannot multiply: at most one line per reason per interval, with a count.

A peer can make the server refuse thousands of handshakes a second, and a full
file table makes every ``accept()`` fail in a tight loop (asyncio's own loop
logs each failure with a traceback: megabytes a second). `RateLimitedLog` keeps
one line per reason per interval and says how many were folded into it;
`install_accept_log` routes the event loop's ``accept()`` resource errors
(EMFILE, ENFILE, ENOBUFS, ENOMEM) through one.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import time
from collections.abc import Callable
from typing import Any

ACCEPT_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
MAX_REASONS = 1024  # distinct reasons remembered; beyond that the oldest is forgotten


class RateLimitedLog:
    """``log(reason, msg, *args)`` writes at most one line per ``reason`` per ``interval`` seconds;
    the line after a quiet spell ends with how many were folded since the last one."""

    def __init__(
        self, logger: logging.Logger, interval: float = 1.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.logger = logger
        self.interval = interval
        self._clock = clock
        self._last: dict[str, tuple[float, int]] = {}  # reason -> (time of the last line, folded since)

    def log(self, level: int, reason: str, msg: str, *args: Any) -> bool:
        """True when a line was written."""
        if not self.logger.isEnabledFor(level):
            return False
        now = self._clock()
        last = self._last.get(reason)
        if last is not None and now - last[0] < self.interval:
            self._last[reason] = (last[0], last[1] + 1)
            return False
        since, folded = last if last is not None else (now, 0)
        self._last.pop(reason, None)
        if len(self._last) >= MAX_REASONS:
            self._last.pop(next(iter(self._last)))
        self._last[reason] = (now, 0)
        if folded:
            msg += " (and %d more like it in the last %.1f s)"
            args = (*args, folded, now - since)
        self.logger.log(level, msg, *args)
        return True


_accept_log = RateLimitedLog(logging.getLogger("asgi_apim.server"))


class AcceptErrorHandler:
    """An event-loop exception handler: ``accept()`` out of resources is one rate-limited line;
    anything else goes to the handler that was there before (or the loop's default)."""

    def __init__(self, previous: Callable[[asyncio.AbstractEventLoop, dict[str, Any]], object] | None) -> None:
        self.previous = previous

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if isinstance(exc, OSError) and exc.errno in ACCEPT_ERRNOS and "accept" in str(context.get("message", "")):
            _accept_log.log(
                logging.ERROR,
                f"accept:{exc.errno}",
                "accept() failed: %s; new connections wait (raise the file limit, ulimit -n, or lower "
                "--limit-concurrency)",
                exc.strerror or exc,
            )
            return
        if "_start_serving" in repr(context.get("handle")) and isinstance(exc, (OSError, ValueError)):
            # asyncio schedules one accept() retry per failure; once the listener is closed
            # (shutdown) each of those thousands fails on the closed socket: harmless, one line
            _accept_log.log(logging.DEBUG, "accept-retry", "accept() retry after the listener closed: %s", exc)
            return
        if self.previous is not None:
            self.previous(loop, context)
        else:
            loop.default_exception_handler(context)


def install_accept_log(loop: asyncio.AbstractEventLoop) -> None:
    """Route ``loop``'s ``accept()`` resource errors through the rate-limited log (once per loop)."""
    current = loop.get_exception_handler()
    if not isinstance(current, AcceptErrorHandler):
        loop.set_exception_handler(AcceptErrorHandler(current))

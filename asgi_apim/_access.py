"""Every refusal, told: a line on logger ``asgi_apim.access`` and a count, for each request the stack refuses.

`asgi_apim.errors.reject` answers every refusal (the security stage's, the
throttling stage's, the gateway's and the admin API's) and calls `refused`
once for each, so accepted requests never come here. A line names the method,
the path (never the query string, which can carry an API key), the socket
peer, the API, the status, WSO2's code and the detail the client was given
(never a credential: details are written not to quote one). The same fields
ride on the record as extra attributes (``method``, ``path``, ``peer``,
``api``, ``status``, ``code``, ``detail``) for a JSON formatter.

A flood cannot fill a disk: within each one-second window, at most
`PER_REASON` lines for one reason (status, code, detail) and `TOTAL` lines in
all are written; what is held back is counted and told, one line per reason,
when the next window opens.

`REFUSED` (by API, status and code) and `THROTTLED` (by API and tier) count
every refusal since start-up, for metrics (plain dicts, read at scrape time).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, MutableMapping
from typing import Any

from asgi_apim._keys import PEER

logger = logging.getLogger("asgi_apim.access")

PER_REASON = 5  # lines per reason per window
TOTAL = 100  # lines per window, every reason together
WINDOW = 1.0  # seconds
_MAX_REASONS = 1024  # reasons whose held-back lines are counted one by one in a window; the rest together
_UNPRINTABLE = re.compile(r"[^\x20-\x7e\xa0-\U0010ffff]")  # control characters: a forged log line

Reason = tuple[int, int, str]  # status, WSO2 code, detail

REFUSED: dict[tuple[str, int, int], int] = {}  # (api, status, code) -> refusals since start-up
THROTTLED: dict[tuple[str, str], int] = {}  # (api, tier) -> 429s since start-up
NO_API = "-"  # the API label of a refusal on a path no API owns


def printable(text: str) -> str:
    """``text`` with every control character (CR, LF above all) shown as ``?``: one log line stays one."""
    return _UNPRINTABLE.sub("?", text)


class RefusalLog:
    """Writes refusal lines within the limits above; built once (`refused` uses the process's)."""

    def __init__(
        self,
        log: logging.Logger = logger,
        *,
        per_reason: int = PER_REASON,
        total: int = TOTAL,
        window: float = WINDOW,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.log = log
        self.per_reason = per_reason
        self.total = total
        self.window = window
        self.clock = clock
        self._opened = clock()
        self._lines = 0
        self._written: dict[Reason, int] = {}
        self._held: dict[Reason, int] = {}
        self._held_other = 0  # held back for reasons past _MAX_REASONS

    def __call__(self, scope: MutableMapping[str, Any], status: int, code: int, detail: str, api: str | None) -> None:
        now = self.clock()
        if now - self._opened >= self.window:
            self._tell_held(now)
        reason = (status, code, detail)
        written = self._written.get(reason, 0)
        if written >= self.per_reason or self._lines >= self.total:
            if reason in self._held or len(self._held) < _MAX_REASONS:
                self._held[reason] = self._held.get(reason, 0) + 1
            else:
                self._held_other += 1
            return
        self._written[reason] = written + 1
        self._lines += 1
        peer = scope.get(PEER) or scope.get("client")
        fields = {
            "method": scope.get("method", "WEBSOCKET"),
            "path": printable(scope.get("path", "")),
            "peer": peer[0] if peer else None,
            "api": api,
            "status": status,
            "code": code,
            "detail": printable(detail),
        }
        self.log.log(
            logging.WARNING if status >= 500 else logging.INFO,
            "refused %s %s from %s (api %s): %d %d %s",
            fields["method"],
            fields["path"],
            fields["peer"] or "-",
            api or NO_API,
            status,
            code,
            fields["detail"],
            extra=fields,
        )

    def _tell_held(self, now: float) -> None:
        elapsed = now - self._opened
        held, other = self._held, self._held_other
        self._opened, self._lines, self._written, self._held, self._held_other = now, 0, {}, {}, 0
        told = 0
        for (status, code, detail), count in held.items():
            if told >= self.total:
                other += count
                continue
            told += 1
            self.log.warning(
                "%d more refusals %d %d %s not logged in the last %.0f s",
                count,
                status,
                code,
                printable(detail),
                elapsed,
                extra={"status": status, "code": code, "detail": printable(detail), "suppressed": count},
            )
        if other:
            self.log.warning(
                "%d more refusals of other reasons not logged in the last %.0f s",
                other,
                elapsed,
                extra={"suppressed": other},
            )


_log = RefusalLog()


def refused(scope: MutableMapping[str, Any], status: int, code: int, detail: str, api: str | None) -> None:
    """Count and log one refusal (called by `asgi_apim.errors.reject` and nothing else)."""
    key = (api or NO_API, status, code)
    REFUSED[key] = REFUSED.get(key, 0) + 1
    if status == 429:
        tier = getattr(scope.get("user"), "tier", None) or NO_API
        throttled = (api or NO_API, tier)
        THROTTLED[throttled] = THROTTLED.get(throttled, 0) + 1
    _log(scope, status, code, detail, api)

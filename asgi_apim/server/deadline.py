"""A deadline for the request head: a client that has not sent one in time is cut off.

uvicorn closes an idle keep-alive connection (``--timeout-keep-alive``) but
waits for ever for a request head that arrives a byte at a time, and for a
first request that never comes: a few thousand such clients hold every file
descriptor. The mixins here close a connection whose request head is not
complete ``header_timeout`` seconds after

* the connection was made (after the TLS handshake), for the first request;
* the first byte of each later request on a keep-alive connection (the wait
  between requests is uvicorn's keep-alive timeout).

The timeout comes from uvicorn's Config (``header_timeout``, set by
``asgi-apim serve --header-timeout``), else from the environment variable
``ASGI_APIM_HEADER_TIMEOUT`` (plain uvicorn, gunicorn), else
`DEFAULT_HEADER_TIMEOUT`; 0 turns it off.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

import h11

from asgi_apim.server.ratelog import RateLimitedLog, install_accept_log

HEADER_TIMEOUT_ENV = "ASGI_APIM_HEADER_TIMEOUT"
DEFAULT_HEADER_TIMEOUT = 10.0

logger = logging.getLogger("asgi_apim.server")
_cut_off = RateLimitedLog(logger)


def parse_header_timeout(value: str | float | None) -> float | None:
    """Seconds (> 0), or None for "no deadline" (0); ValueError for anything else."""
    if value is None:
        return DEFAULT_HEADER_TIMEOUT
    seconds = float(value)
    if seconds != seconds or seconds < 0 or seconds == float("inf"):
        raise ValueError(f"header timeout must be a number of seconds >= 0 (got {value!r})")
    return seconds or None


def header_timeout_for(config: Any) -> float | None:
    """The head deadline for connections served under uvicorn ``config``."""
    value = getattr(config, "header_timeout", None)
    if value is None:
        value = os.environ.get(HEADER_TIMEOUT_ENV)
    try:
        return parse_header_timeout(value)
    except ValueError:
        logger.warning(
            "%s=%r is not a number of seconds; using %.0f", HEADER_TIMEOUT_ENV, value, DEFAULT_HEADER_TIMEOUT
        )
        return DEFAULT_HEADER_TIMEOUT


class HeadDeadlineMixin:
    """The timer, shared by the httptools and h11 variants. Put it before the uvicorn base."""

    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport
    client: tuple[str, int] | None
    config: Any
    _head_timer: asyncio.TimerHandle | None = None
    _header_timeout: float | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:
        super().connection_made(transport)  # type: ignore[misc]  # the uvicorn protocol after this mixin in the MRO has it
        install_accept_log(self.loop)
        self._header_timeout = header_timeout_for(self.config)
        self._arm_head_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_deadline()
        super().connection_lost(exc)  # type: ignore[misc]  # the uvicorn protocol after this mixin in the MRO has it

    def _arm_head_deadline(self) -> None:
        if self._head_timer is None and self._header_timeout is not None:
            self._head_timer = self.loop.call_later(self._header_timeout, self._head_timed_out)

    def _disarm_head_deadline(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        peer = f"{self.client[0]}:{self.client[1]}" if self.client else "unix socket"
        _cut_off.log(
            logging.INFO,
            "head",
            "closed the connection from %s: no complete request head within %.3g s (--header-timeout)",
            peer,
            self._header_timeout,
        )
        self.transport.abort()


class HttpToolsHeadDeadline(HeadDeadlineMixin):
    """httptools: the head starts at ``on_message_begin`` and ends at ``on_headers_complete``.
    A head that begins and ends within one ``data_received`` (nearly every one) needs no timer:
    the timer is armed only when a call ends with a head begun and not complete, and counts from
    the moment the head began."""

    _head_began: float | None = None  # loop time at on_message_begin of a head not yet complete

    def on_message_begin(self) -> None:
        if self._head_timer is None:
            self._head_began = self.loop.time()
        super().on_message_begin()  # type: ignore[misc]  # the uvicorn protocol after this mixin in the MRO has it

    def on_headers_complete(self) -> None:
        self._head_began = None
        self._disarm_head_deadline()
        super().on_headers_complete()  # type: ignore[misc]  # the uvicorn protocol after this mixin in the MRO has it

    def data_received(self, data: bytes) -> None:
        super().data_received(data)  # type: ignore[misc]  # the uvicorn protocol after this mixin in the MRO has it
        began = self._head_began
        if began is not None and self._head_timer is None and self._header_timeout is not None:
            self._head_timer = self.loop.call_at(began + self._header_timeout, self._head_timed_out)


class H11HeadDeadline(HeadDeadlineMixin):
    """h11: the head is pending while the peer is IDLE with bytes buffered, done once it is past IDLE."""

    conn: Any

    def handle_events(self) -> None:
        super().handle_events()  # type: ignore[misc]  # the uvicorn protocol after this mixin in the MRO has it
        if self.conn.their_state is not h11.IDLE:
            self._disarm_head_deadline()
        elif self.conn.trailing_data[0]:
            self._arm_head_deadline()

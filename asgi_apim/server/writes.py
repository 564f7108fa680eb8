"""One write for a response's head and its first body piece.

uvicorn's httptools protocol writes a response's head (``http.response.start``)
and its body (``http.response.body``) with two ``transport.write`` calls. On
uvloop each is a ``write(2)`` to the socket at once, and for a small response
on a fast network those system calls are a good part of what the server spends
on the request. `OneWriteHead` gives each request's response cycle a
`HeldHead` in front of the transport: the response head (the cycle's first
write past an interim ``100 Continue``, which goes at once) is held back and
goes out together with the next write (one ``writelines``, a single ``writev``
on uvloop); when no write follows in the same pass of the event loop (a
streamed response waiting for its first chunk), the head goes out on its own
at the end of that pass (``loop.call_soon``). Only the head is ever held, so
the body's flow control is unchanged; closing the cycle's transport sends the
held head first, and any bytes the protocol writes itself (a ``400`` for a
malformed pipelined request, a WebSocket handshake) follow it, because the
held head is sent before the protocol parses more input.
"""

from __future__ import annotations

import asyncio
from typing import Any


class HeldHead:
    """The transport as one response cycle sees it: the response head is held until the next write."""

    __slots__ = ("_first", "_flush", "_held", "_loop", "transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self.transport = transport
        self._loop = loop
        self._first = True
        self._held: bytes | None = None
        self._flush: asyncio.Handle | None = None

    @property
    def holding(self) -> bool:
        return self._held is not None

    def write(self, data: bytes) -> None:
        if self._first and data[9:10] != b"1":  # "HTTP/1.1 1xx": an interim response goes at once
            self._first = False
            self._held = bytes(data)
            self._flush = self._loop.call_soon(self.flush)
            return
        held = self._held
        if held is None:
            self.transport.write(data)
            return
        self._held = None
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        if not self.transport.is_closing():
            self.transport.writelines((held, data))

    def flush(self) -> None:
        """Send what is held (nothing when the connection is already going)."""
        held, self._held = self._held, None
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        if held and not self.transport.is_closing():
            self.transport.write(held)

    def close(self) -> None:
        self.flush()
        self.transport.close()

    def is_closing(self) -> bool:
        return self.transport.is_closing()

    def __getattr__(self, name: str) -> Any:  # everything else is the transport's
        return getattr(self.transport, name)


class OneWriteHead:
    """For uvicorn's httptools protocol: each new response cycle writes through a `HeldHead`.
    Put it before the uvicorn base."""

    cycle: Any
    transport: asyncio.Transport
    loop: asyncio.AbstractEventLoop

    def on_headers_complete(self) -> None:
        before = self.cycle
        super().on_headers_complete()  # type: ignore[misc]  # the uvicorn protocol after this mixin in the MRO has it
        cycle = self.cycle
        if cycle is not None and cycle is not before:
            cycle.transport = HeldHead(self.transport, self.loop)

    def data_received(self, data: bytes) -> None:
        held = getattr(self.cycle, "transport", None)
        if isinstance(held, HeldHead) and held.holding:
            held.flush()  # before anything the protocol may write itself in answer to these bytes
        super().data_received(data)  # type: ignore[misc]  # the uvicorn protocol after this mixin in the MRO has it

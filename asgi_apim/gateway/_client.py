"""The client's side of one proxied request: its body as the upstream client pulls it, and the
`Guard` that ends the request when the client goes away or the API's total deadline passes.

The guard cancels the request's task and tells why (``gone``, ``expired``); the proxy withdraws
that cancellation (`Guard.caught`) and answers as for a transport failure or a departed client.
A client's departure is seen through the server's ``connection_lost`` future
(``scope["asgi_apim.connection_lost"]``, set by `asgi-apim serve` and `gateway`) as a
done-callback, with nothing running per request; under another server, `Guard.watch` waits in
``receive()`` for ``http.disconnect`` as a task of its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from starlette.types import Receive

REPLAY_LIMIT = 64 * 1024  # a request body up to this size is kept to be sent again after an OAuth2 401


class ClientGone(Exception):
    """The client disconnected while its request was being forwarded."""


class RequestBody:
    """The client's request body as the upstream client pulls it."""

    def __init__(self, receive: Receive, keep: bool) -> None:
        self.receive = receive
        self.done = asyncio.Event()
        self.started = False
        self.kept: list[bytes] | None = [] if keep else None
        self._size = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        self.started = True
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                raise ClientGone()
            chunk = message.get("body", b"")
            if chunk:
                if self.kept is not None:
                    self._size += len(chunk)
                    if self._size > REPLAY_LIMIT:
                        self.kept = None
                    else:
                        self.kept.append(chunk)
                yield chunk
            if not message.get("more_body", False):
                break
        self.done.set()

    def replay(self) -> AsyncIterator[bytes] | None:
        if self.kept is None or not self.done.is_set():
            return None

        async def again() -> AsyncIterator[bytes]:
            for chunk in self.kept or ():
                yield chunk

        return again()


class Guard:
    """Cancels the request's task when its client disconnects before the response is whole (called
    as the connection_lost future's done-callback, or from `watch`), or at the total deadline."""

    __slots__ = ("_cancelled", "_closed", "_timer", "expired", "finished", "gone", "task")

    def __init__(self, task: asyncio.Task[Any] | None, total: float) -> None:
        self.task = task
        self.gone = False
        self.expired = False
        self.finished = False
        self._cancelled = False
        self._closed = False
        self._timer = task.get_loop().call_later(total, self._expire) if total and task is not None else None

    def __call__(self, _: object = None) -> None:
        """The client's connection is gone."""
        if not self.finished:
            self.gone = True
            self._cancel()

    def _expire(self) -> None:
        self._timer = None
        self.expired = True
        self._cancel()

    def _cancel(self) -> None:
        if not self._cancelled and not self._closed and self.task is not None:
            self._cancelled = True
            self.task.cancel()

    def caught(self) -> bool:
        """Whether the CancelledError being handled is this guard's alone; if so the task's
        cancellation is withdrawn (a cancellation from elsewhere stays and is raised)."""
        if not self._cancelled or self.task is None:
            return False
        self._cancelled = False
        return self.task.uncancel() == 0

    def close(self) -> None:
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    async def watch(self, receive: Receive, body: RequestBody | None) -> None:
        if body is not None:  # the body's own reads see a disconnect until it is read whole
            await body.done.wait()
        while (await receive())["type"] != "http.disconnect":
            pass
        self()

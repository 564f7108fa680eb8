"""Background work of a stack (truststore reloads, JWKS refreshes), started with
the first lifespan startup or request on the running loop, cancelled at shutdown."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from starlette.types import Message, Receive

logger = logging.getLogger("asgi_apim")


class BackgroundTasks:
    def __init__(self, *jobs: Callable[[], Awaitable[None]]) -> None:
        self.jobs = list(jobs)
        self.started = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: list[asyncio.Task[None]] = []

    def add(self, job: Callable[[], Awaitable[None]]) -> None:
        self.jobs.append(job)

    def ensure_started(self) -> None:
        loop = asyncio.get_running_loop()
        if self.started and self._loop is loop:
            return
        self._tasks = [loop.create_task(self._guard(job)) for job in self.jobs]
        self._loop = loop
        self.started = True

    async def _guard(self, job: Callable[[], Awaitable[None]]) -> None:
        try:
            await job()
        except asyncio.CancelledError:
            raise
        except Exception:  # a background job must never take the app down
            logger.exception("background job %r stopped", getattr(job, "__qualname__", job))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        self._tasks = []
        self.started = False

    def lifespan(self, receive: Receive, on_shutdown: Callable[[], Awaitable[None]] | None = None) -> Receive:
        """``receive`` of a lifespan scope that starts the jobs at startup and stops them
        (then runs ``on_shutdown``) at shutdown."""

        async def wrapped() -> Message:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.ensure_started()
            elif message["type"] == "lifespan.shutdown":
                await self.stop()
                if on_shutdown is not None:
                    await on_shutdown()
            return message

        return wrapped

"""Interceptors for the edge tests."""

from __future__ import annotations

from typing import Any

from starlette.responses import PlainTextResponse, Response

from asgi_apim.edge import InterceptorContext, ResponseContext


async def tag(ctx: InterceptorContext) -> None:
    ctx.headers.append("x-tag", "first")


async def tag_again(ctx: InterceptorContext) -> None:
    ctx.headers.append("x-tag", "second")


async def answer(ctx: InterceptorContext) -> Response:
    return PlainTextResponse(f"answered for {ctx.api.name}", status_code=202)


async def wrong(ctx: InterceptorContext) -> Any:
    return "not a response"


async def teapot(ctx: ResponseContext) -> None:
    ctx.status = 418
    del ctx.headers["x-secret"]


class Callable:
    async def __call__(self, ctx: InterceptorContext) -> None:
        ctx.headers["x-object"] = "yes"


instance = Callable()

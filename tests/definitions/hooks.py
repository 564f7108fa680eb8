"""Interceptors that the test definitions name (``module:function``)."""

from __future__ import annotations

from starlette.responses import JSONResponse

from asgi_apim.edge import InterceptorContext, ResponseContext


async def add_header(ctx: InterceptorContext) -> None:
    """Tells the app (or backend) who called, as a request header."""
    user = ctx.request.user
    ctx.headers["x-intercepted"] = f"{user.subject if user.is_authenticated else '-'}@{ctx.api.version}"


async def refuse_delete(ctx: InterceptorContext) -> None:
    """Answers the request itself: nothing is deleted on a Sunday (or ever, here)."""
    ctx.respond(JSONResponse({"refused": True, "subject": ctx.request.user.subject}, status_code=409))


async def stamp_response(ctx: ResponseContext) -> None:
    ctx.headers["x-intercepted"] = "response"


async def broken(ctx: InterceptorContext) -> None:
    raise RuntimeError("this interceptor is broken")


async def broken_response(ctx: ResponseContext) -> None:
    raise RuntimeError("this response interceptor is broken")


def not_async(ctx: InterceptorContext) -> None:
    return None

"""`InterceptorMiddleware`: WSO2 Microgateway's request and response interceptors, in Python.

An interceptor is an async callable named ``"module:function"`` (``interceptors``,
``response_interceptors``, or ``x-wso2-request-interceptor`` / ``x-wso2-response-interceptor``
in a definition; a resource's own replace its API's). Request interceptors run in order after
authentication and throttling, before the app or the backend, each given an
`InterceptorContext`: the caller (``ctx.request.user``), the request headers it may change, and
``ctx.respond(response)`` (or returning a Starlette `Response`) to answer at once. Response
interceptors run when the response starts, given a `ResponseContext` whose ``status`` and
``headers`` they may change. An interceptor that raises is logged with its traceback and the
request is answered 500 (problem+json, 101500): never a hung request, never a half-sent one.
HTTP only: WebSocket handshakes pass untouched.
"""

from __future__ import annotations

import importlib
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from asgi_apim.config import ApiConfig, ResourceConfig
from asgi_apim.errors import ConfigError, InterceptorFailed, reject
from asgi_apim.routing import Router

logger = logging.getLogger("asgi_apim.interceptors")
_MAX_ROUTES = 4096


class InterceptorContext:
    """What a request interceptor is given: ``request`` (``request.user`` is the caller), the
    request ``headers`` (a `MutableHeaders` over the request: changes reach the app or backend),
    and `respond` to answer the request itself."""

    __slots__ = ("request", "headers", "response", "api")

    def __init__(self, scope: Scope, api: ApiConfig) -> None:
        self.request = Request(scope)  # no receive: the body is the app's to read
        self.headers = MutableHeaders(scope=scope)
        self.response: Response | None = None
        self.api = api

    @property
    def user(self) -> Any:
        return self.request.user

    def respond(self, response: Response) -> None:
        """Answer the request with ``response``; the app (or the backend) is not called."""
        self.response = response


class ResponseContext:
    """What a response interceptor is given: the ``request``, and the response's ``status`` and
    ``headers`` (a `MutableHeaders`), which it may change."""

    __slots__ = ("request", "headers", "_message", "api")

    def __init__(self, request: Request, message: Message, api: ApiConfig) -> None:
        self.request = request
        message["headers"] = list(message.get("headers", ()))
        self.headers = MutableHeaders(raw=message["headers"])
        self._message = message
        self.api = api

    @property
    def user(self) -> Any:
        return self.request.user

    @property
    def status(self) -> int:
        return int(self._message["status"])

    @status.setter
    def status(self, value: int) -> None:
        self._message["status"] = value


RequestInterceptor = Callable[[InterceptorContext], Awaitable[Response | None]]
ResponseInterceptor = Callable[[ResponseContext], Awaitable[None]]


def load_interceptor(spec: str, key: str) -> Callable[..., Awaitable[Any]]:
    """The async callable ``module:attribute`` names; a `ConfigError` naming ``key`` otherwise."""
    module_name, _, attr = spec.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            target = getattr(target, part)
    except ImportError as exc:
        raise ConfigError(key, f"cannot import {module_name!r}: {exc}") from None
    except AttributeError:
        raise ConfigError(key, f"{module_name!r} has no {attr!r}") from None
    call = type(target).__call__ if callable(target) and not inspect.isroutine(target) else None
    if not (inspect.iscoroutinefunction(target) or (call is not None and inspect.iscoroutinefunction(call))):
        raise ConfigError(key, f"{spec!r} is not an async callable (async def name(ctx): ...)")
    result: Callable[..., Awaitable[Any]] = target
    return result


class _Chains:
    __slots__ = ("api", "request", "response")

    def __init__(
        self, api: ApiConfig, request: tuple[RequestInterceptor, ...], response: tuple[ResponseInterceptor, ...]
    ):
        self.api = api
        self.request = request
        self.response = response


class InterceptorMiddleware:
    """Built only when some API or resource names interceptors; other paths cost one dict lookup."""

    def __init__(self, app: ASGIApp, *, router: Router) -> None:
        self.app = app
        self.router = router
        self._loaded: dict[str, Callable[..., Awaitable[Any]]] = {}
        self._chains: dict[tuple[str, int], _Chains | None] = {}
        for api in router.apis:
            self._chains[(api.name, 0)] = self._build(api, None, f"apis[{api.name}]")
            for i, r in enumerate(api.resources, start=1):
                if r.interceptors is not None or r.response_interceptors is not None:
                    self._chains[(api.name, i)] = self._build(api, r, f"apis[{api.name}].resources[{i - 1}]")
        self._routes: dict[tuple[str, str], _Chains | None] = {}

    def __bool__(self) -> bool:
        return any(c is not None for c in self._chains.values())

    def _build(self, api: ApiConfig, resource: ResourceConfig | None, key: str) -> _Chains | None:
        request = resource.interceptors if resource and resource.interceptors is not None else api.interceptors
        response = (
            resource.response_interceptors
            if resource and resource.response_interceptors is not None
            else api.response_interceptors
        )
        if not request and not response:
            return None
        loaded = []
        for name, specs in (("interceptors", request), ("response_interceptors", response)):
            found = []
            for i, spec in enumerate(specs):
                fn = self._loaded.get(spec) or load_interceptor(spec, f"{key}.{name}[{i}]")
                self._loaded[spec] = fn
                found.append(fn)
            loaded.append(tuple(found))
        return _Chains(api, loaded[0], loaded[1])

    def _lookup(self, method: str, path: str) -> _Chains | None:
        key = (method, path)
        try:
            return self._routes[key]
        except KeyError:
            pass
        route = self.router.match(method, path)
        chains = None
        if route.api is not None:
            index = 0
            if route.resource is not None and (api_resources := route.api.resources):
                index = next((i for i, r in enumerate(api_resources, start=1) if r is route.resource), 0)
            chains = self._chains.get((route.api.name, index), self._chains.get((route.api.name, 0)))
        if len(self._routes) >= _MAX_ROUTES:
            self._routes.clear()
        self._routes[key] = chains
        return chains

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        chains = self._lookup(scope["method"], scope["path"])
        if chains is None:
            await self.app(scope, receive, send)
            return
        if chains.request:
            ctx = InterceptorContext(scope, chains.api)
            try:
                for interceptor in chains.request:
                    answer = await interceptor(ctx)
                    if answer is not None and not isinstance(answer, Response):
                        raise TypeError(f"a request interceptor answered {type(answer).__name__}, not a Response")
                    if answer is not None or ctx.response is not None:
                        await (answer or ctx.response)(scope, receive, send)  # type: ignore[misc]  # one is set
                        return
            except Exception:
                logger.exception("a request interceptor of API %r failed", chains.api.name)
                await reject(scope, send, InterceptorFailed("a request interceptor failed"))
                return
        if chains.response:
            send = self._responding(scope, send, chains)
        await self.app(scope, receive, send)

    @staticmethod
    def _responding(scope: Scope, send: Send, chains: _Chains) -> Send:
        request = Request(scope)
        failed = False

        async def wrapped(message: Message) -> None:
            nonlocal failed
            if failed:
                return  # the 500 has been sent: the app's own response goes nowhere
            if message["type"] == "http.response.start":
                ctx = ResponseContext(request, message, chains.api)
                try:
                    for interceptor in chains.response:
                        await interceptor(ctx)
                except Exception:
                    logger.exception("a response interceptor of API %r failed", chains.api.name)
                    failed = True
                    await reject(scope, send, InterceptorFailed("a response interceptor failed"))
                    return
            await send(message)

        return wrapped

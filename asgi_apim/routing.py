"""Which API, and which resource of it, a request belongs to.

An API owns its ``context`` path prefix (at a segment boundary: ``/pets`` owns
``/pets`` and ``/pets/1``, not ``/petshop``); the longest context wins.
Resource paths are Starlette-style templates (``/pets/{id}``), written either
in full (starting with the context, with or without its version) or relative to
the context; an API read from an OpenAPI definition has them relative, as
OpenAPI does. A versioned API owns ``/context/version``; with
``default_version`` it owns the unversioned context too, with the same resources.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from starlette.routing import compile_path

from asgi_apim.config import ApiConfig, Config, ResourceConfig

_CACHE_SIZE = 4096


@dataclass(frozen=True, slots=True)
class Route:
    api: ApiConfig | None
    resource: ResourceConfig | None = None
    public: bool = False


PUBLIC = Route(api=None, public=True)
UNROUTED = Route(api=None)


def _under(path: str, prefix: str) -> bool:
    return prefix == "/" or path == prefix or path.startswith(prefix + "/")


def relative_path(api: ApiConfig, path: str) -> str:
    """A resource path below the API's context (``""`` for the context itself)."""
    if api.definition is not None:
        return "" if path == "/" else path
    for context in (api.context, api.unversioned_context):
        if context is not None and _under(path, context):
            return path if context == "/" else path[len(context) :]
    return path


class Router:
    """Built once from the configuration; `match` is the per-request call."""

    def __init__(
        self, apis: tuple[ApiConfig, ...] | list[ApiConfig], public_paths: tuple[str, ...] | list[str] = ()
    ) -> None:
        self.public_paths = tuple(p.rstrip("/") or "/" for p in public_paths)
        self.apis = tuple(apis)
        # (context, api), longest first: a default version's unversioned context is one more prefix of its API
        self._prefixes = sorted(((c, a) for a in apis for c in a.contexts), key=lambda p: len(p[0]), reverse=True)
        self._resources: dict[str, list[tuple[re.Pattern[str], frozenset[str], ResourceConfig]]] = {}
        for api in self.apis:
            compiled = []
            for r in api.resources:
                rel = relative_path(api, r.path)
                methods = frozenset(r.methods)
                if "GET" in methods:  # Starlette (and HTTP) serve HEAD with the GET handler: the same rules apply
                    methods |= {"HEAD"}
                for context in api.contexts:
                    regex, _, _ = compile_path((context.rstrip("/") + rel) or "/")
                    compiled.append((regex, methods, r))
            self._resources[api.name] = compiled
        self._cache: dict[tuple[str, str], Route] = {}

    @classmethod
    def from_config(cls, config: Config) -> Router:
        return cls(config.apis, config.public_paths)

    def match(self, method: str, path: str) -> Route:
        key = (method, path)
        route = self._cache.get(key)
        if route is None:
            route = self._match(method, path)
            if len(self._cache) >= _CACHE_SIZE:
                self._cache.clear()
            self._cache[key] = route
        return route

    def varies_by_method(self, route: Route, path: str) -> bool:
        """Whether the route of ``path`` (``route``, for any method) may depend on the method: a
        resource of its API that names methods matches it (else every method gets the same route)."""
        api = route.api
        return api is not None and any(methods and regex.match(path) for regex, methods, _ in self._resources[api.name])

    def _match(self, method: str, path: str) -> Route:
        for p in self.public_paths:
            if _under(path, p):
                return PUBLIC
        for context, api in self._prefixes:
            if _under(path, context):
                for regex, methods, resource in self._resources[api.name]:
                    if (not methods or method in methods) and regex.match(path):
                        return Route(api=api, resource=resource, public=resource.public)
                return Route(api=api)
        return UNROUTED

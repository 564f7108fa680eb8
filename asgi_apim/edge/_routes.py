"""A bounded per-path memo of what a stage keeps per API (one dict lookup per request)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from asgi_apim.config import ApiConfig
from asgi_apim.routing import Router

T = TypeVar("T")
_MAX_PATHS = 4096


class PerAPI(Generic[T]):
    """``router``'s API of a path -> what ``build`` made for it (None for a path of no API)."""

    def __init__(self, router: Router, build: Callable[[ApiConfig], T | None]) -> None:
        self.router = router
        self.by_api = {api.name: built for api in router.apis if (built := build(api)) is not None}
        self._paths: dict[str, T | None] = {}

    def __bool__(self) -> bool:
        return bool(self.by_api)

    def get(self, path: str) -> T | None:
        try:
            return self._paths[path]
        except KeyError:
            pass
        api = self.router.match("GET", path).api  # per API: the method and the resource do not matter
        found = self.by_api.get(api.name) if api is not None else None
        if len(self._paths) >= _MAX_PATHS:
            self._paths.clear()
        self._paths[path] = found
        return found

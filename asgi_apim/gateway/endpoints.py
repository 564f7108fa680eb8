"""Which backend endpoint a request goes to: single URLs, endpoint groups, WSO2's suspension.

A backend is one URL or a group of them (``failover``: in order, the first
available one first; ``load_balance``: round robin, starting one further each
request). An endpoint whose call fails in transport (refused, reset, timed out,
not HTTP) is *suspended*, as WSO2 suspends endpoints: for ``initial`` seconds
after its first failure, then ``factor`` times longer after each further
failure in a row, never longer than ``max``; once the time is up it is tried
again, and one success makes it fully active. ``initial = 0`` turns suspension
off. A request finds the endpoints it may try with `EndpointGroup.candidates`;
when every one is suspended that is `EndpointsSuspended` (503, 303001).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

from asgi_apim.errors import EndpointsSuspended
from asgi_apim.gateway_config import BackendConfig, SuspensionConfig

logger = logging.getLogger("asgi_apim.gateway")

DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class Address:
    scheme: str
    host: str
    port: int


class Endpoint:
    """One backend URL and its suspension state."""

    def __init__(self, url: str, suspension: SuspensionConfig, clock: Callable[[], float] = time.monotonic) -> None:
        parts = urlsplit(url)
        self.url = url
        scheme = parts.scheme.lower()
        host = parts.hostname or ""
        self.address = Address(scheme, host, parts.port or DEFAULT_PORTS[scheme])
        path = parts.path.rstrip("/")
        self.path = quote(path, safe="/%:@!$&'()*+,;=~-._").encode("ascii")  # as written, already encoded or not
        name = f"[{host}]" if ":" in host else host
        default = self.address.port == DEFAULT_PORTS[scheme]
        self.host_header = (name if default else f"{name}:{self.address.port}").encode("idna")
        self._suspension = suspension
        self._clock = clock
        self.failures = 0
        self.suspended_until = 0.0

    def available(self, now: float) -> bool:
        return now >= self.suspended_until

    def failed(self, cause: str) -> None:
        s = self._suspension
        self.failures += 1
        if s.initial <= 0:
            return
        duration = min(s.initial * s.factor ** (self.failures - 1), s.max)
        self.suspended_until = self._clock() + duration
        logger.warning(
            "endpoint %s suspended for %.0f s after %s (failure %d)", self.url, duration, cause, self.failures
        )

    def succeeded(self) -> None:
        if self.failures:
            logger.info("endpoint %s is active again", self.url)
        self.failures = 0
        self.suspended_until = 0.0

    def state(self, now: float) -> dict[str, Any]:
        suspended = not self.available(now)
        return {
            "state": "suspended" if suspended else "active",
            "failures": self.failures,
            "retry_in": round(self.suspended_until - now, 1) if suspended else 0,
        }


class EndpointGroup:
    """The endpoints of one backend (a single URL is a group of one) and the order to try them."""

    def __init__(
        self, backend: BackendConfig, suspension: SuspensionConfig, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.type = backend.type
        self.endpoints = tuple(Endpoint(u, suspension, clock) for u in backend.urls)
        self._clock = clock
        self._next = 0

    def candidates(self) -> list[Endpoint]:
        """The endpoints to try for one request, in order; `EndpointsSuspended` when none is available."""
        now = self._clock()
        endpoints = self.endpoints
        if self.type == "load_balance" and len(endpoints) > 1:
            start = self._next % len(endpoints)
            self._next = start + 1
            endpoints = endpoints[start:] + endpoints[:start]
        available = [e for e in endpoints if e.available(now)]
        if not available:
            raise EndpointsSuspended("every endpoint of the API's backend is suspended; try again later")
        return available

    def ready(self) -> bool:
        now = self._clock()
        return any(e.available(now) for e in self.endpoints)

    def state(self) -> list[dict[str, Any]]:
        now = self._clock()
        return [{"endpoint": i, **e.state(now)} for i, e in enumerate(self.endpoints)]

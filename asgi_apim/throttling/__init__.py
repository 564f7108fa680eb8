"""Throttling: WSO2's tiers (caller, API, resource) on `limits`, in memory or Redis.

from asgi_apim.throttling import ThrottlingMiddleware
app.add_middleware(ThrottlingMiddleware, tiers={"Gold": "5000/minute"})
"""

from asgi_apim.throttling.keys import Caller, CallerKeys
from asgi_apim.throttling.limiter import Limiter
from asgi_apim.throttling.middleware import ThrottlingMiddleware
from asgi_apim.throttling.storage import LazyMemoryStorage
from asgi_apim.throttling.tiers import Tier, parse_tier, parse_tiers

__all__ = [
    "Caller",
    "CallerKeys",
    "LazyMemoryStorage",
    "Limiter",
    "ThrottlingMiddleware",
    "Tier",
    "parse_tier",
    "parse_tiers",
]

"""Rate-limit response headers, in one of two styles.

``ratelimit`` (draft-ietf-httpapi-ratelimit-headers-11)::

    RateLimit-Policy: "Gold";q=5000;w=60
    RateLimit: "Gold";r=4999;t=60

``x-ratelimit`` (the de-facto style): the most nearly exhausted limit::

    X-RateLimit-Limit: 5000
    X-RateLimit-Remaining: 4999
    X-RateLimit-Reset: 60          (seconds from now)

Successful responses advertise the caller's own limits only: a shared API or
resource count would tell every caller how much the others use (the draft's
§ 8 asks servers not to expose such volumes). A 429 names the limit that was
exhausted, whatever its level.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from asgi_apim.throttling.engine import Limit, Window

STYLES = ("ratelimit", "x-ratelimit", "none")
_UNSAFE = re.compile(r'[^A-Za-z0-9 !#-\[\]-~]')  # sf-string: printable ASCII without " and \


def policy_name(label: str) -> str:
    return _UNSAFE.sub("_", label)


def policy_item(limit: Limit) -> str:
    return f'"{limit.policy}";q={limit.item.amount};w={limit.item.get_expiry()}'


Headers = list[tuple[bytes, bytes]]


class HeaderStyle:
    """Renders `Window`s as header lines; built once per style."""

    def __init__(self, style: str) -> None:
        if style not in STYLES:
            raise ValueError(f"headers must be one of {', '.join(STYLES)} (got {style!r})")
        self.style = style
        self.enabled = style != "none"
        self._policies: dict[tuple[Limit, ...], bytes] = {}

    def success(self, windows: Sequence[tuple[Limit, Window]]) -> Headers:
        if not windows:
            return []
        if self.style == "ratelimit":
            key = tuple(limit for limit, _ in windows)
            policy = self._policies.get(key)
            if policy is None:
                policy = ", ".join(policy_item(limit) for limit in key).encode("ascii")
                if len(self._policies) < 1024:
                    self._policies[key] = policy
            current = ", ".join(f'"{limit.policy}";r={w.remaining};t={w.reset}' for limit, w in windows)
            return [(b"ratelimit-policy", policy), (b"ratelimit", current.encode("ascii"))]
        limit, window = min(windows, key=lambda lw: (lw[1].remaining, -lw[1].reset))
        return [
            (b"x-ratelimit-limit", str(limit.item.amount).encode()),
            (b"x-ratelimit-remaining", str(window.remaining).encode()),
            (b"x-ratelimit-reset", str(window.reset).encode()),
        ]

    def refused(self, limit: Limit, retry_after: int) -> dict[str, str]:
        if self.style == "ratelimit":
            return {"ratelimit-policy": policy_item(limit), "ratelimit": f'"{limit.policy}";r=0;t={retry_after}'}
        if self.style == "x-ratelimit":
            return {
                "x-ratelimit-limit": str(limit.item.amount),
                "x-ratelimit-remaining": "0",
                "x-ratelimit-reset": str(retry_after),
            }
        return {}

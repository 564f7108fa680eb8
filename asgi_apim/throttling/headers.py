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
from collections.abc import Awaitable, Callable, Sequence
from math import ceil

from starlette.types import Message, Send

from asgi_apim.throttling.base import Limit

STYLES = ("ratelimit", "x-ratelimit", "none")
_UNSAFE = re.compile(r"[^A-Za-z0-9 !#-\[\]-~]")  # sf-string: printable ASCII but quote and backslash

Headers = list[tuple[bytes, bytes]]


def policy_name(label: str) -> str:
    return _UNSAFE.sub("_", label)


def policy_item(limit: Limit) -> str:
    return f'"{limit.policy}";q={limit.amount};w={limit.expiry}'


class Advertiser:
    """The success headers of one set of limits: what is static is rendered once, here.

    ``wrap(send, result)`` is ``send`` adding the headers of ``result`` (a charge's answer) to
    the response start. It is a function made once per advertiser, not a method: the request
    path reads it from a slot and calls it, with no bound method made per call."""

    __slots__ = ("ratelimit", "limits", "names", "policy", "amounts", "single", "wrap")

    def __init__(self, style: str, limits: Sequence[Limit]) -> None:
        self.ratelimit = style == "ratelimit"
        self.limits = tuple(limits)
        self.names = [f'"{limit.policy}"' for limit in limits]
        self.policy = (b"ratelimit-policy", ", ".join(policy_item(limit) for limit in limits).encode("ascii"))
        self.amounts = [str(limit.amount).encode() for limit in limits]
        # the usual case, one limit: its RateLimit value as a bytes format ("%" of a policy name doubled)
        self.single = (
            (self.names[0].replace("%", "%%") + ";r=%d;t=%d").encode("ascii")
            if self.ratelimit and len(self.limits) == 1
            else None
        )
        self.wrap: Callable[[Send, Sequence[float]], Send] = self._wrapper()

    def _wrapper(self) -> Callable[[Send, Sequence[float]], Send]:
        render, policy, single = self.__call__, self.policy, self.single

        def wrap(send: Send, result: Sequence[float]) -> Send:
            if single is not None:  # rendered here, without a call
                remaining, reset = result[1], result[2]
                extra = [
                    policy,
                    (b"ratelimit", single % (remaining if remaining > 0 else 0, ceil(reset) if reset > 0 else 0)),
                ]
            else:
                extra = render(result)

            # not a coroutine itself: it hands back ``send``'s awaitable, so a message costs no extra coroutine
            def wrapped(message: Message) -> Awaitable[None]:
                if message["type"] == "http.response.start":
                    try:  # a new list (the app may reuse its own): Starlette sends a list
                        message["headers"] = message["headers"] + extra
                    except (KeyError, TypeError):  # none, or another iterable (the spec allows any)
                        message["headers"] = [*(message.get("headers") or ()), *extra]
                return send(message)

            return wrapped

        return wrap

    def __call__(self, result: Sequence[float]) -> Headers:
        """``result``: a charge's answer, ``[0, remaining, seconds to reset, ...]`` for each limit, in order."""
        if self.ratelimit:
            current = ", ".join(
                f"{name};r={max(0, int(result[i]))};t={max(0, ceil(result[i + 1]))}"
                for name, i in zip(self.names, range(1, len(result), 2))
            )
            return [self.policy, (b"ratelimit", current.encode())]
        i = min(range(len(self.names)), key=lambda j: (result[2 * j + 1], -result[2 * j + 2]))
        return [
            (b"x-ratelimit-limit", self.amounts[i]),
            (b"x-ratelimit-remaining", b"%d" % max(0, result[2 * i + 1])),
            (b"x-ratelimit-reset", b"%d" % max(0, ceil(result[2 * i + 2]))),
        ]


class HeaderStyle:
    def __init__(self, style: str) -> None:
        if style not in STYLES:
            raise ValueError(f"headers must be one of {', '.join(STYLES)} (got {style!r})")
        self.style = style
        self.enabled = style != "none"

    def advertiser(self, limits: Sequence[Limit]) -> Advertiser | None:
        """What successful responses carry for ``limits``; None when nothing is to be said."""
        return Advertiser(self.style, limits) if self.enabled and limits else None

    def refused(self, limit: Limit, retry_after: int) -> dict[str, str]:
        if self.style == "ratelimit":
            return {"ratelimit-policy": policy_item(limit), "ratelimit": f'"{limit.policy}";r=0;t={retry_after}'}
        if self.style == "x-ratelimit":
            return {
                "x-ratelimit-limit": str(limit.amount),
                "x-ratelimit-remaining": "0",
                "x-ratelimit-reset": str(retry_after),
            }
        return {}

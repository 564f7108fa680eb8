"""Tiers: a name for one or more limits in `limits` notation, or ``unlimited``.

    Gold = "5000/minute"
    Burst = "10/second;1000/hour"
    Unlimited = "unlimited"

Parsed once at start-up with `limits.parse_many`; a string that does not parse
stops start-up with a `ConfigError` naming ``throttling.tiers.NAME``. WSO2's
default tiers are present unless the configuration redefines them.

`asgi_apim.config` parses the tiers when it loads, and the throttling stage
builds its limits from them: both import this module, which imports neither.
Its public home is `asgi_apim.throttling.tiers`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from limits import RateLimitItem, parse_many

from asgi_apim.errors import ConfigError

UNLIMITED = "unlimited"
DEFAULT_TIERS: dict[str, str] = {
    "Unlimited": UNLIMITED,
    "Gold": "5000/minute",
    "Silver": "2000/minute",
    "Bronze": "1000/minute",
    "Unauthenticated": "500/minute",
}


@dataclass(frozen=True, slots=True)
class Tier:
    """A named set of limits; no limits at all means unlimited."""

    name: str
    limits: tuple[RateLimitItem, ...] = ()

    @property
    def unlimited(self) -> bool:
        return not self.limits

    def __str__(self) -> str:
        return (
            UNLIMITED
            if self.unlimited
            else ";".join(f"{i.amount}/{i.multiples} {i.GRANULARITY.name}" for i in self.limits)
        )


_ZERO_WINDOW = re.compile(r"(?:/|\bper)\s*0+\s*[A-Za-z]", re.IGNORECASE)


def parse_tier(name: str, value: str) -> Tier:
    """One ``[throttling.tiers]`` entry. Raises `ConfigError` naming the key."""
    key = f"throttling.tiers.{name}"
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(key, "must be a limit such as '1000/minute', '10/second;1000/hour' or 'unlimited'")
    if value.strip().lower() == UNLIMITED:
        return Tier(name)
    try:
        items = parse_many(value)
    except ValueError:
        raise ConfigError(
            key, f"{value!r} is not a limit such as '1000/minute', '10/second;1000/hour' or 'unlimited'"
        ) from None
    if not items:
        raise ConfigError(key, f"{value!r} names no limit")
    if _ZERO_WINDOW.search(value):  # `limits` reads "10/0 minute" as 10/minute
        raise ConfigError(key, f"{value!r} has an empty window")
    for item in items:
        if item.amount > 2**53:  # a count Redis keeps in a double, and Lua's numbers, cannot be exact beyond
            raise ConfigError(
                key, f"{value!r} allows more requests than can be counted exactly (at most 2**53); use 'unlimited'"
            )
        if item.get_expiry() <= 0:
            raise ConfigError(key, f"{value!r} has an empty window")
        if item.amount < 1:  # would answer every request 429 ("retry later"), which no later retry changes
            raise ConfigError(
                key, f"{value!r} allows no request; to refuse callers, remove their registration or credentials"
            )
    return Tier(name, tuple(sorted(set(items), key=lambda i: (i.get_expiry(), i.amount))))


def parse_tiers(tiers: Mapping[str, str], *, defaults: bool = True) -> dict[str, Tier]:
    """Every tier, parsed; WSO2's defaults first unless ``defaults`` is false."""
    merged = {**(DEFAULT_TIERS if defaults else {}), **tiers}
    return {name: parse_tier(name, value) for name, value in merged.items()}

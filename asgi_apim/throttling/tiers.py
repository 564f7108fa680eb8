"""Tiers: a name for one or more limits in `limits` notation, or ``unlimited``.

    Gold = "5000/minute"
    Burst = "10/second;1000/hour"
    Unlimited = "unlimited"

Defined in `asgi_apim._tiers`, below the configuration, which parses them
when it loads.
"""

from asgi_apim._tiers import DEFAULT_TIERS, UNLIMITED, Tier, parse_tier, parse_tiers

__all__ = ["DEFAULT_TIERS", "UNLIMITED", "Tier", "parse_tier", "parse_tiers"]

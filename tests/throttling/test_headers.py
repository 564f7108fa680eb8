"""`Advertiser.wrap`: the success headers go onto the response start, whatever shape its headers have."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from limits import parse

from asgi_apim.throttling.engine import Limit
from asgi_apim.throttling.headers import Advertiser, policy_name

GOLD = Limit(
    level="subscription", tier="Gold", item=parse("5000/minute"), code=900804, policy=policy_name("Gold"), report=True
)
EXPECTED = [(b"ratelimit-policy", b'"Gold";q=5000;w=60'), (b"ratelimit", b'"Gold";r=4998;t=42')]


def deliver(message: dict[str, Any]) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def send(m: dict[str, Any]) -> None:
        sent.append(m)

    asyncio.run(Advertiser("ratelimit", [GOLD]).wrap(send, [0, 4998, 41.2])(message))  # type: ignore[arg-type]
    return sent


@pytest.mark.parametrize(
    "headers, before",
    [
        ([(b"content-type", b"text/plain")], [(b"content-type", b"text/plain")]),
        (((b"content-type", b"text/plain"),), [(b"content-type", b"text/plain")]),
        (None, []),
    ],
    ids=["list", "tuple", "absent"],
)
def test_headers_are_added_to_a_new_list(headers: Any, before: list[tuple[bytes, bytes]]) -> None:
    message: dict[str, Any] = {"type": "http.response.start", "status": 200}
    if headers is not None:
        message["headers"] = headers
    original = headers
    (sent,) = deliver(message)
    assert sent["headers"] == before + EXPECTED
    if isinstance(original, list):
        assert original == before, "the app's own header list is not changed"


def test_body_messages_pass_untouched() -> None:
    body = {"type": "http.response.body", "body": b"ok"}
    (sent,) = deliver(dict(body))
    assert sent == body


def test_negative_remaining_and_reset_are_clamped() -> None:
    sent: list[dict[str, Any]] = []

    async def send(m: dict[str, Any]) -> None:
        sent.append(m)

    asyncio.run(
        Advertiser("ratelimit", [GOLD]).wrap(send, [0, -3, -0.5])({"type": "http.response.start", "headers": []})
    )  # type: ignore[arg-type]
    assert sent[0]["headers"][-1] == (b"ratelimit", b'"Gold";r=0;t=0')


def test_a_percent_sign_in_a_policy_name_is_rendered_as_itself() -> None:
    sent: list[dict[str, Any]] = []

    async def send(m: dict[str, Any]) -> None:
        sent.append(m)

    odd = Limit(
        level="subscription",
        tier="100%",
        item=parse("10/second"),
        code=900804,
        policy=policy_name("100%d"),
        report=True,
    )
    asyncio.run(Advertiser("ratelimit", [odd]).wrap(send, [0, 7, 0.2])({"type": "http.response.start", "headers": []}))  # type: ignore[arg-type]
    assert sent[0]["headers"][-1] == (b"ratelimit", b'"100%d";r=7;t=1')

"""``asgi-apim serve`` against a JWKS endpoint that drips one byte every 2 s (tests/auth/hostile.py):
16 connections whose tokens name a new ``kid`` are all answered 401 within ``jwks_wait``, and
tokens with the known ``kid`` pass meanwhile without delay."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.auth.hostile import Hostile, running_hostile
from tests.auth.idp import ISSUER, claims, rsa_key
from tests.e2e.conftest import Servers

K1, K2 = rsa_key("k1"), rsa_key("k2", second=True)

CONFIG = """
[encryption]
key = "{key}"

[[key_managers]]
name = "idp"
issuer = "{issuer}"
jwks_url = "{url}/jwks.json"
jwks_min_refetch_interval = 0
jwks_wait = 2
fetch_timeout = 4

[[apis]]
name = "pets"
context = "/pets"

[apis.security]
application = ["oauth2"]
"""


@pytest.fixture
def hostile() -> Iterator[Hostile]:
    with running_hostile() as state:
        state.jwks = {"keys": [K1.jwk()]}
        yield state


async def test_a_dripping_issuer_holds_no_request_past_jwks_wait(
    servers: Servers, tmp_path: Path, hostile: Hostile
) -> None:
    config = tmp_path / "deployment.toml"
    config.write_text(CONFIG.format(key=secrets.token_hex(32), issuer=ISSUER, url=hostile.url))
    served = servers.serve("tests.e2e.whoami_app:app", config)

    async def get(client: httpx.AsyncClient, token: str) -> tuple[float, int, object]:
        began = time.monotonic()
        response = await client.get(f"{served.url}/pets/whoami", headers={"authorization": f"Bearer {token}"})
        code = response.json().get("code") if response.status_code != 200 else response.json()["subject"]
        return time.monotonic() - began, response.status_code, code

    limits = httpx.Limits(max_connections=64)
    async with httpx.AsyncClient(timeout=30, limits=limits) as new_kids, httpx.AsyncClient(timeout=30) as known:
        assert (await get(known, K1.sign(claims(sub="warm"))))[1:] == (200, "warm")
        hostile.mode, hostile.drip_interval = "drip", 2.0
        waiting = asyncio.ensure_future(
            asyncio.gather(*(get(new_kids, K2.sign(claims(sub=f"new-{i}"))) for i in range(16)))
        )
        meanwhile = []
        while not waiting.done():
            took, status, subject = await get(known, K1.sign(claims(sub=f"known-{len(meanwhile)}")))
            assert status == 200 and subject == f"known-{len(meanwhile)}"
            meanwhile.append(took)
            await asyncio.sleep(0.05)
        answers = await waiting
    assert [(status, code) for _, status, code in answers] == [(401, 900901)] * 16
    assert max(took for took, _, _ in answers) < 2.0 + 1.0, answers
    assert len(meanwhile) >= 10 and max(meanwhile) < 0.5, meanwhile
    assert hostile.requests == 2  # the start-up fetch and one refetch shared by all 16

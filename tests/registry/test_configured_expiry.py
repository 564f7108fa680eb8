"""Certificates registered in the configuration file that expire soon are logged at start-up."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from asgi_apim import protect
from asgi_apim.certs.pki import issue_client, make_ca
from tests.asgi import call, echo_user

CONFIG = """
[encryption]
key = "{key}"
[mutual_ssl]
trusted_proxies = ["127.0.0.1/32"]
[[apis]]
name = "pets"
context = "/pets"
[apis.security]
mutual_ssl = "mandatory"
[[apis.certificates]]
alias = "short"
certificate = "short.pem"
tier = "Unlimited"
[[apis.certificates]]
alias = "long"
certificate = "long.pem"
tier = "Unlimited"
"""


async def test_a_configured_registration_expiring_soon_is_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ca = make_ca("expiry CA")
    issue_client(ca, "short", days=10).write(tmp_path / "short.pem")
    issue_client(ca, "long", days=365).write(tmp_path / "long.pem")
    (tmp_path / "deployment.toml").write_text(CONFIG.format(key="9a" * 32))
    app = protect(echo_user, tmp_path / "deployment.toml")
    caplog.set_level(logging.WARNING, logger="asgi_apim.registry")
    await call(app, "GET", "/pets/x")  # the first request starts the background work
    for _ in range(50):
        if any("'short'" in r.getMessage() for r in caplog.records):
            break
        await asyncio.sleep(0.01)
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("asgi_apim.registry")]
    assert any("'short' of API 'pets' (config) expires in" in line for line in lines), lines
    assert not any("'long'" in line for line in lines)
    await app.background.stop()  # type: ignore[attr-defined]

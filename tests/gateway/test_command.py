"""``asgi-apim gateway``: the serve runner with the gateway as its app."""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

import pytest

from asgi_apim.cli import main
from asgi_apim.gateway.app import GatewayHealth
from asgi_apim.gateway.websocket import _close_code
from asgi_apim.server import run
from asgi_apim.server.app import APP_DIR_ENV, APP_ENV, CONFIG_ENV, FACTORY, GATEWAY_ENV, GC_THRESHOLD, create_app
from asgi_apim.server.configs import forget_configs

WITH_BACKEND = """
[encryption]
key = "{key}"
[basic_auth]
users_file = "users.htpasswd"
[[apis]]
name = "a"
context = "/a"
backend = "http://127.0.0.1:9"
[apis.security]
application = ["basic"]
"""


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in (APP_ENV, CONFIG_ENV, APP_DIR_ENV, GATEWAY_ENV):
        monkeypatch.setenv(name, "restored-after-the-test")
    forget_configs()
    (tmp_path / "users.htpasswd").write_text("")
    return tmp_path


def test_gateway_runs_the_serve_runner_with_the_gateway_factory(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(run, "_run", lambda config: calls.append(dict(vars(config))) or 0)
    config = workdir / "gateway.toml"
    config.write_text(WITH_BACKEND.format(key="ab" * 32))
    argv = ["gateway", "--config", str(config), "--port", "8123", "--workers", "2"]
    assert main(argv) == 2  # memory:// limits would be counted per worker: refused, as for serve
    assert main([*argv, "--allow-per-worker-limits"]) == 0
    assert calls[0]["app"] == FACTORY and calls[0]["factory"] is True
    assert calls[0]["port"] == 8123 and calls[0]["workers"] == 2
    gc.unfreeze()
    threshold = gc.get_threshold()
    assert isinstance(create_app(), GatewayHealth)  # what every worker builds
    assert gc.get_freeze_count() > 0  # and then keeps out of the collector's sight
    assert gc.get_threshold() == GC_THRESHOLD
    gc.unfreeze()
    gc.set_threshold(*threshold)


def test_a_configuration_without_a_backend_is_one_line_and_exit_1(
    workdir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(run.uvicorn, "run", lambda app, **kw: pytest.fail("must not start"))
    config = workdir / "gateway.toml"
    config.write_text(WITH_BACKEND.format(key="ab" * 32).replace('backend = "http://127.0.0.1:9"\n', ""))
    assert main(["gateway", "--config", str(config)]) == 1
    err = capsys.readouterr().err.strip()
    assert "no API has a backend" in err and len(err.splitlines()) == 1


def test_gateway_usage_errors_exit_2() -> None:
    with pytest.raises(SystemExit) as info:
        main(["gateway"])
    assert info.value.code == 2


def test_close_codes_kept_where_they_can_be_sent() -> None:
    assert [_close_code(c) for c in (1000, 1001, 4001, None, 1005, 1006, 1015, 999, 5000)] == [
        1000,
        1001,
        4001,
        1000,
        1000,
        1011,
        1011,
        1011,
        1011,
    ]

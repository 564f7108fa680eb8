from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from uvicorn.protocols.http.h11_impl import H11Protocol

from asgi_apim.certs.pki import init_pki
from asgi_apim.cli import main
from asgi_apim.server import app as app_module
from asgi_apim.server import protocols, run
from asgi_apim.server.app import APP_DIR_ENV, APP_ENV, CONFIG_ENV, FACTORY
from asgi_apim.server.configs import forget_configs
from asgi_apim.server.tls import TrustContextFactory

MANDATORY = """
[mutual_ssl]
truststore = ["pki/ca.pem"]

[[apis]]
name = "pets"
context = "/pets"

[apis.security]
mutual_ssl = "mandatory"
"""


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    init_pki(tmp_path / "pki")
    (tmp_path / "deployment.toml").write_text(MANDATORY)
    (tmp_path / "plain.toml").write_text('public_paths = ["/health"]\n')
    for name in (APP_ENV, CONFIG_ENV, APP_DIR_ENV):
        monkeypatch.setenv(name, "restored-after-the-test")
    forget_configs()
    return tmp_path


@pytest.fixture
def uvicorn_run(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = []

    def fake_run(config: Any) -> int:
        calls.append(dict(vars(config)))
        return 0

    monkeypatch.setattr(run, "_run", fake_run)
    return calls


def _serve(workdir: Path, *args: str, config: str = "deployment.toml") -> int:
    return main(["serve", "example_app.main:app", "--config", str(workdir / config), *args])


def test_tls_serve_passes_our_classes_and_trust_factory(workdir: Path, uvicorn_run: list[dict[str, Any]]) -> None:
    pki = workdir / "pki"
    rc = _serve(
        workdir,
        "--ssl-certfile",
        str(pki / "server.pem"),
        "--ssl-keyfile",
        str(pki / "server.key"),
        "--port",
        "8443",
        "--workers",
        "2",
        "--allow-per-worker-limits",
        "--http",
        "h11",
        "--ws",
        "websockets-sansio",
        "--app-dir",
        str(workdir),
    )
    assert rc == 0
    (kw,) = uvicorn_run
    assert kw["app"] == FACTORY and kw["factory"] is True
    assert kw["http"] is protocols.H11TLSProtocol and kw["ws"] is protocols.WebSocketsSansIOTLSProtocol
    assert kw["ssl_cert_reqs"] == 1  # an API uses mutual SSL
    assert kw["ssl_context_factory"] == TrustContextFactory(str((workdir / "deployment.toml").resolve()))
    assert (kw["port"], kw["workers"], kw["ssl_ca_certs"]) == (8443, 2, None)
    import os

    assert os.environ[APP_ENV] == "example_app.main:app"
    assert os.environ[CONFIG_ENV] == str((workdir / "deployment.toml").resolve())
    assert os.environ[APP_DIR_ENV] == str(workdir.resolve())


def test_plain_serve_requests_no_certificates(workdir: Path, uvicorn_run: list[dict[str, Any]]) -> None:
    assert _serve(workdir, "--ws", "none", "--no-proxy-headers", "--forwarded-allow-ips", "127.0.0.2") == 0
    (kw,) = uvicorn_run
    assert kw["ssl_context_factory"] is None and kw["ssl_cert_reqs"] == 0 and kw["ws"] == "none"
    assert kw["proxy_headers"] is False and kw["forwarded_allow_ips"] == "127.0.0.2"


def test_explicit_cert_reqs_and_ca_certs_win(workdir: Path, uvicorn_run: list[dict[str, Any]]) -> None:
    pki = workdir / "pki"
    rc = _serve(
        workdir,
        "--ssl-certfile",
        str(pki / "server.pem"),
        "--ssl-keyfile",
        str(pki / "server.key"),
        "--ssl-cert-reqs",
        "2",
        "--ssl-ca-certs",
        str(pki / "ca.pem"),
        config="plain.toml",
    )
    assert rc == 0
    (kw,) = uvicorn_run
    assert kw["ssl_cert_reqs"] == 2 and kw["ssl_ca_certs"] == str(pki / "ca.pem")


def test_bad_config_is_one_line_exit_1(
    workdir: Path, uvicorn_run: list[dict[str, Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    (workdir / "bad.toml").write_text('[[apis]]\nname = "x"\ncontext = "/x"\nfrobnicate = 1\n')
    assert _serve(workdir, config="bad.toml") == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "frobnicate" in err and "Traceback" not in err
    assert _serve(workdir, config="missing.toml") == 1
    assert uvicorn_run == []


@pytest.mark.parametrize(
    "args",
    [["--http", "zttp"], ["--ws", "socketio"], ["--ssl-keyfile", "k.pem"], ["--log-level", "loud"]],
)
def test_bad_usage_exits_2(
    workdir: Path, uvicorn_run: list[dict[str, Any]], args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert _serve(workdir, *args) == 2
    assert capsys.readouterr().err.count("\n") == 1 and uvicorn_run == []


def test_app_without_colon_exits_2(workdir: Path, uvicorn_run: list[dict[str, Any]]) -> None:
    assert main(["serve", "example_app", "--config", str(workdir / "deployment.toml")]) == 2


def test_failed_selftest_stops_serve(
    workdir: Path,
    uvicorn_run: list[dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(run, "tls_protocols", lambda http, ws: (H11Protocol, None))
    assert _serve(workdir) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not deliver scope['extensions']['tls']" in err
    assert uvicorn_run == []


def test_uvicorn_startup_failure_is_exit_1(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def failing_run(self: Any, sockets: Any = None) -> None:
        raise SystemExit(3)

    monkeypatch.setattr(run.HandshakeServer, "run", failing_run)
    assert _serve(workdir) == 1


def test_create_app_needs_its_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(APP_ENV, raising=False)
    with pytest.raises(RuntimeError, match=APP_ENV):
        app_module.create_app()


def test_config_is_loaded_once_per_process(workdir: Path) -> None:
    first = app_module.config_for(workdir / "deployment.toml")
    assert app_module.config_for(str(workdir / "deployment.toml")) is first
    assert first.apis[0].security.mutual_ssl == "mandatory"


@pytest.mark.parametrize("target", ["no_such_module_xyz:app", "example_app.main:no_such_app"])
@pytest.mark.parametrize("workers", [[], ["--workers", "2", "--allow-per-worker-limits"]])
def test_unimportable_app_is_one_line_exit_1(
    workdir: Path,
    uvicorn_run: list[dict[str, Any]],
    target: str,
    workers: list[str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["serve", target, "--config", str(workdir / "deployment.toml"), *workers]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"cannot import {target!r}" in err and uvicorn_run == []


def test_workers_build_the_stack_once_up_front(
    workdir: Path, uvicorn_run: list[dict[str, Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    (workdir / "pki" / "ca.pem").unlink()  # the truststore the stack needs
    assert _serve(workdir, "--workers", "2", "--allow-per-worker-limits") == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "ca.pem" in err and uvicorn_run == []


@pytest.mark.parametrize("flag", ["--ssl-certfile", "--ssl-ca-certs"])
def test_a_missing_tls_file_is_named(
    workdir: Path, uvicorn_run: list[dict[str, Any]], capsys: pytest.CaptureFixture[str], flag: str
) -> None:
    assert _serve(workdir, flag, "certs/nowhere.pem") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{flag} certs/nowhere.pem: no such file" in err and uvicorn_run == []


def test_the_access_log_filter_hides_the_configured_key_parameter_and_credential_names() -> None:
    config = run.log_config("info", "partner_key")
    assert config["handlers"]["access"]["filters"] == ["query_credentials"]
    spec = dict(config["filters"]["query_credentials"])
    hide = spec.pop("()")(**spec)  # as logging.config builds it, in every worker
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5", "GET", "/a?partner_key=PK1&Password=PW2&q=keyboard&x=1", "1.1", 200),
        None,
    )
    assert hide.filter(record)
    assert record.getMessage() == '127.0.0.1:5 - "GET /a?partner_key=***&Password=***&q=keyboard&x=1 HTTP/1.1" 200'


def test_httpx_s_request_lines_are_not_logged(capsys: pytest.CaptureFixture[str]) -> None:
    # httpx logs each request's URL at INFO, with the user information and query of a JWKS or
    # introspection URL: the serve process (its CLI logging and every worker's) keeps httpx to warnings
    assert run.log_config("info")["loggers"]["httpx"] == {"level": "WARNING"}
    main(["keygen"])
    capsys.readouterr()
    assert logging.getLogger("httpx").getEffectiveLevel() >= logging.WARNING
    assert logging.getLogger("httpcore").getEffectiveLevel() >= logging.WARNING


def test_slow_client_flags_reach_uvicorn_and_our_protocols(workdir: Path, uvicorn_run: list[dict[str, Any]]) -> None:
    flags = ("--header-timeout", "2.5", "--limit-concurrency", "100", "--timeout-keep-alive", "7")
    assert _serve(workdir, *flags, config="plain.toml") == 0
    (kw,) = uvicorn_run
    assert (kw["header_timeout"], kw["limit_concurrency"], kw["timeout_keep_alive"]) == (2.5, 100, 7)
    uvicorn_run.clear()
    assert _serve(workdir, "--header-timeout", "0", config="plain.toml") == 0
    assert uvicorn_run[0]["header_timeout"] == 0.0  # off: parse_header_timeout gives None from it
    with pytest.raises(SystemExit) as info:
        _serve(workdir, "--header-timeout", "-1", config="plain.toml")
    assert info.value.code == 2

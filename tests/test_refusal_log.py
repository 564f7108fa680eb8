"""Every refusal is logged on ``asgi_apim.access`` once, with what an operator needs and no secret,
rate-limited per reason; ``--log-format json`` writes the same fields as one JSON object a line."""

from __future__ import annotations

import base64
import json
import logging
from pathlib import Path
from typing import Any
from urllib.parse import quote

import bcrypt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from asgi_apim import _access, protect
from asgi_apim._access import RefusalLog
from asgi_apim.certs.pki import issue_client, make_ca
from asgi_apim.server.logformat import JSONFormatter
from asgi_apim.server.run import log_config
from tests.asgi import call, make_scope

CONFIG = """
[encryption]
key = "{key}"

[mutual_ssl]
truststore = ["ca.pem"]

[[key_managers]]
name = "idp"
issuer = "https://idp.example"
shared_secret = "a-shared-secret-of-the-idp-0123456789"
algorithms = ["HS256"]

[api_keys]
signing_key = "signing.pem"

[basic_auth]
users_file = "users.htpasswd"

[throttling.tiers]
Tiny = "1/minute"

[[apis]]
name = "pets"
context = "/pets"
[apis.security]
mutual_ssl = "optional"
application = ["oauth2", "api_key", "basic"]
application_mandatory = false
[[apis.certificates]]
alias = "partners"
certificate = "ca.pem"
tier = "Tiny"
"""
PASSWORD = "the-Password-1"


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def records() -> Any:
    handler = Records()
    logger = logging.getLogger("asgi_apim.access")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.DEBUG)
    yield handler.records
    logger.removeHandler(handler)
    logger.setLevel(level)


@pytest.fixture
def app(tmp_path: Path) -> Any:
    ca = make_ca("refusal CA")
    ca.write(tmp_path / "ca.pem")
    (tmp_path / "users.htpasswd").write_text(f"alice:{bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()}\n")
    _signing_key(tmp_path)
    (tmp_path / "deployment.toml").write_text(CONFIG.format(key="59" * 32))
    return protect(ok, tmp_path / "deployment.toml"), issue_client(make_ca("unknown CA"), "stranger")


def _signing_key(tmp: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    (tmp / "signing.pem").write_bytes(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))


async def ok(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b""})


def _fresh_log(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_access, "_log", RefusalLog())  # a new window: earlier tests' lines do not count


async def test_a_refusal_is_logged_with_its_fields(app: Any, records: list[Any], monkeypatch: Any) -> None:
    _fresh_log(monkeypatch)
    stack, _ = app
    result = await call(stack, "GET", "/pets/1", query="color=vermilion", client=("192.0.2.7", 5555))
    assert result.status == 401
    (record,) = records
    assert record.levelno == logging.INFO
    assert (record.method, record.path, record.peer, record.api) == ("GET", "/pets/1", "192.0.2.7", "pets")
    assert (record.status, record.code) == (401, 900902)
    assert record.detail == result.json()["detail"]
    assert "color" not in record.getMessage() and "vermilion" not in record.getMessage()
    assert record.getMessage() == f"refused GET /pets/1 from 192.0.2.7 (api pets): 401 900902 {record.detail}"


async def test_a_path_no_api_owns_and_a_forged_line(app: Any, records: list[Any], monkeypatch: Any) -> None:
    _fresh_log(monkeypatch)
    stack, _ = app
    assert (await call(stack, "GET", "/nowhere\r\nrefused GET /admin")).status == 404
    (record,) = records
    assert "\r" not in record.getMessage() and "\n" not in record.getMessage()
    assert record.api is None and "(api -)" in record.getMessage()


async def test_no_credential_is_ever_logged(app: Any, records: list[Any], monkeypatch: Any) -> None:
    _fresh_log(monkeypatch)
    stack, stranger = app
    token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJtYWxsb3J5In0.c2lnbmF0dXJlLW9mLW1hbGxvcnk"
    apikey = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJrZXkifQ.a2V5LXNpZ25hdHVyZQ"
    basic = base64.b64encode(f"alice:{PASSWORD}x".encode()).decode()
    cert = quote(stranger.cert_pem().decode(), safe="")
    requests: list[tuple[list[tuple[str, str]], str]] = [
        ([("authorization", f"Bearer {token}")], ""),
        ([("apikey", apikey)], ""),
        ([], f"apikey={apikey}&access_token={token}"),
        ([("authorization", f"Basic {basic}")], ""),
        ([("x-wso2-client-certificate", cert)], ""),
    ]
    for headers, query in requests:
        assert (await call(stack, "GET", "/pets/1", headers, query=query)).status in (400, 401)
    assert len(records) == len(requests)
    formatter = JSONFormatter()
    text = "\n".join([r.getMessage() for r in records] + [formatter.format(r) for r in records])
    pem_body = stranger.cert_pem().decode().splitlines()[1]
    for secret in (token, apikey, basic, PASSWORD, cert, pem_body, "access_token"):
        assert secret not in text


async def test_refusals_are_counted_by_code_and_throttles_by_tier(tmp_path: Path, monkeypatch: Any) -> None:
    _fresh_log(monkeypatch)
    ca = make_ca("count CA")
    ca.write(tmp_path / "ca.pem")
    (tmp_path / "users.htpasswd").write_text("")
    _signing_key(tmp_path)
    config = CONFIG.format(key="5a" * 32).replace('name = "pets"', 'name = "cnt"')
    config = config.replace('truststore = ["ca.pem"]', 'truststore = ["ca.pem"]\ntrusted_proxies = ["10.0.0.1/32"]')
    (tmp_path / "deployment.toml").write_text(config)
    stack = protect(ok, tmp_path / "deployment.toml")
    header = [("x-wso2-client-certificate", quote(issue_client(ca, "p").cert_pem().decode(), safe=""))]
    refused, throttled = dict(_access.REFUSED), dict(_access.THROTTLED)
    untrusted = [(await call(stack, "GET", "/pets/1", header, client=("10.9.9.9", 1))).status for _ in range(2)]
    assert untrusted == [401, 401]  # the header from an untrusted peer is ignored: no certificate
    trusted = [(await call(stack, "GET", "/pets/1", header, client=("10.0.0.1", 1))).status for _ in range(3)]
    assert trusted == [200, 429, 429]  # Tiny: 1/minute
    assert _access.REFUSED[("cnt", 401, 900902)] - refused.get(("cnt", 401, 900902), 0) == 2
    assert sum(n - refused.get(k, 0) for k, n in _access.REFUSED.items() if k[0] == "cnt" and k[1] == 429) == 2
    assert _access.THROTTLED[("cnt", "Tiny")] - throttled.get(("cnt", "Tiny"), 0) == 2


def test_a_flood_is_held_back_and_counted() -> None:
    now = [0.0]
    handler = Records()
    log = logging.getLogger("tests.refusals.flood")
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    refusals = RefusalLog(log, per_reason=3, total=5, window=1.0, clock=lambda: now[0])
    scope = make_scope("GET", "/pets/1")
    for _ in range(100):
        refusals(scope, 401, 900901, "the access token is invalid", "pets")
    for i in range(10):
        refusals(scope, 404, 900906, f"no API is published at /x{i}", None)
    assert len(handler.records) == 5  # 3 of the first reason, then the window's total
    now[0] = 1.5
    refusals(scope, 401, 900901, "the access token is invalid", "pets")
    told = [r.getMessage() for r in handler.records[5:]]
    assert told[0] == "97 more refusals 401 900901 the access token is invalid not logged in the last 2 s"
    assert sum(r.suppressed for r in handler.records[5:] if hasattr(r, "suppressed")) == 97 + 8
    assert told[-1].startswith("refused GET /pets/1")  # the new window logs again
    assert handler.records[5].levelno == logging.WARNING


def test_a_server_error_is_a_warning(records: list[Any], monkeypatch: Any) -> None:
    _fresh_log(monkeypatch)
    _access.refused(make_scope("POST", "/orders"), 502, 101503, "the gateway could not connect to the backend", "o")
    (record,) = records
    assert record.levelno == logging.WARNING and record.status == 502


def test_json_lines_carry_the_fields() -> None:
    record = logging.LogRecord("asgi_apim.access", logging.INFO, __file__, 1, "refused %s", ("GET",), None)
    for key, value in {"method": "GET", "path": "/p", "peer": "1.2.3.4", "api": "pets", "status": 401}.items():
        setattr(record, key, value)
    doc = json.loads(JSONFormatter().format(record))
    assert doc["message"] == "refused GET" and doc["logger"] == "asgi_apim.access" and doc["level"] == "INFO"
    assert (doc["method"], doc["path"], doc["peer"], doc["api"], doc["status"]) == ("GET", "/p", "1.2.3.4", "pets", 401)
    assert "msg" not in doc and "args" not in doc and doc["time"].endswith("+00:00")


def test_log_format_json_replaces_both_formatters() -> None:
    config = log_config("info", "apikey", "json")
    assert config["formatters"]["default"] == {"()": "asgi_apim.server.logformat.JSONFormatter"}
    assert config["formatters"]["access"] == {"()": "asgi_apim.server.logformat.JSONFormatter"}
    assert log_config("info")["formatters"]["default"]["()"] != "asgi_apim.server.logformat.JSONFormatter"

"""The mutual-SSL x application decision table, row by row, and scopes."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from asgi_apim._keys import CERTIFICATE, ROUTE
from asgi_apim.auth.base import RecallSupport
from asgi_apim.auth.policy import APISecurityMiddleware
from asgi_apim.certs.resolver import CertificateOutcome
from asgi_apim.config import parse_config
from asgi_apim.errors import CertificateHeaderError, InvalidCredentials
from asgi_apim.identity import Principal
from asgi_apim.routing import Router
from tests.asgi import call, echo_user, make_scope


@dataclass
class FakeVerdict:
    acceptances: dict[str, Any] = field(default_factory=dict)
    subject: str = "CN=partner"
    leaf: Any = None
    spki_sha256: str = "ab" * 32
    reason: str | None = None
    principals: dict[str, Any] = field(default_factory=dict)

    def reason_for(self, api: str) -> str:
        return f"certificate is not registered for API {api!r}"


class FakeAuth:
    def __init__(self, scheme: str, header: str) -> None:
        self.scheme = scheme
        self.header = header.encode()
        self.challenge = f'{scheme.capitalize()} realm="test"'

    def credential(self, scope: dict) -> str | None:
        for k, v in scope["headers"]:
            if k == self.header:
                return v.decode()
        return None

    async def authenticate(self, credential: str, api: Any, scope: dict) -> Principal:
        if not credential.startswith("good"):
            raise InvalidCredentials(f"{self.scheme} credential refused")
        scopes = tuple(credential.split(":", 1)[1].split(",")) if ":" in credential else ()
        return Principal(
            method=self.scheme, subject="alice", api=api.name, tier="Silver", scopes=scopes, throttle_key="u:alice"
        )

    def strip(self, scope: dict) -> None:
        scope["headers"] = [h for h in scope["headers"] if h[0] != self.header]

    async def start(self) -> None:
        return None

    async def aclose(self) -> None:
        return None


class RecallingAuth(FakeAuth, RecallSupport):
    """Remembers what it validated, as the real authenticators' caches do, and counts full checks."""

    def __init__(self, scheme: str, header: str) -> None:
        super().__init__(scheme, header)
        self.checked = 0
        self.parsed = 0
        self.remembered: dict[tuple[str, str], Principal] = {}
        self.raw: dict[bytes, str] = {}

    async def authenticate(self, credential: str, api: Any, scope: dict) -> Principal:
        self.checked += 1
        principal = await super().authenticate(credential, api, scope)
        self.remembered[(credential, api.name)] = principal
        return principal

    def recall(self, credential: str, api: Any) -> Principal | None:
        return self.remembered.get((credential, api.name))

    def recall_raw(self, raw: bytes, api: Any) -> Principal | None:  # a raw header value remembered for a credential
        return self.remembered.get((self.raw.get(raw), api.name))  # type: ignore[arg-type]

    def remember(self, raw: bytes, credential: str) -> None:
        self.raw[raw] = credential

    def credential(self, scope: dict) -> str | None:
        self.parsed += 1
        return super().credential(scope)


AUTHS = {"oauth2": FakeAuth("oauth2", "x-token"), "basic": FakeAuth("basic", "x-basic")}


def recalling() -> dict[str, RecallingAuth]:
    return {"oauth2": RecallingAuth("oauth2", "x-token"), "basic": RecallingAuth("basic", "x-basic")}


VALID = CertificateOutcome("tls", verdict=FakeVerdict({"pets": SimpleNamespace(alias="partner-a", tier="Gold")}))
INVALID = CertificateOutcome("tls", verdict=FakeVerdict({}, reason="not issued by a trusted CA"))
MISSING = CertificateOutcome()


def stack(
    mutual_ssl: str,
    app_mandatory: bool,
    authenticators: Any = None,
    application: tuple[str, ...] = ("oauth2", "basic"),
    **extra: Any,
) -> APISecurityMiddleware:
    security = {"mutual_ssl": mutual_ssl, "application": list(application), "application_mandatory": app_mandatory}
    cfg = parse_config(
        {
            "public_paths": ["/health"],
            "apis": [
                {
                    "name": "pets",
                    "context": "/pets",
                    "security": security,
                    "resources": [
                        {"path": "/pets/{id}", "methods": ["DELETE"], "scopes": ["pets:write", "pets:admin"]},
                        {"path": "/pets/free", "methods": ["GET"], "public": True},
                    ],
                }
            ],
        },
        base=Path("/"),
    )
    app = extra.pop("app", echo_user)
    return APISecurityMiddleware(app, router=Router.from_config(cfg), authenticators=authenticators or AUTHS, **extra)


CERTS = {"valid": VALID, "invalid": INVALID, "missing": MISSING}
CREDS = {"valid": [("x-token", "good")], "invalid": [("x-token", "bad")], "missing": []}

# (mutual_ssl, application_mandatory, certificate, credential) -> (status, method, code)
TABLE = [
    ("mandatory", False, "valid", "valid", 200, "mutual_ssl", None),
    ("mandatory", False, "valid", "invalid", 200, "mutual_ssl", None),
    ("mandatory", False, "valid", "missing", 200, "mutual_ssl", None),
    ("mandatory", False, "missing", "valid", 401, None, 900902),
    ("mandatory", False, "invalid", "valid", 401, None, 900901),
    ("mandatory", True, "valid", "valid", 200, "oauth2", None),
    ("mandatory", True, "valid", "missing", 401, None, 900902),
    ("mandatory", True, "valid", "invalid", 401, None, 900901),
    ("mandatory", True, "missing", "valid", 401, None, 900902),
    ("mandatory", True, "invalid", "valid", 401, None, 900901),
    ("optional", False, "valid", "valid", 200, "mutual_ssl", None),
    ("optional", False, "valid", "invalid", 200, "mutual_ssl", None),
    ("optional", False, "valid", "missing", 200, "mutual_ssl", None),
    ("optional", False, "missing", "valid", 200, "oauth2", None),
    ("optional", False, "invalid", "valid", 200, "oauth2", None),
    ("optional", False, "missing", "missing", 401, None, 900902),
    ("optional", False, "missing", "invalid", 401, None, 900901),
    ("optional", False, "invalid", "missing", 401, None, 900901),
    ("optional", False, "invalid", "invalid", 401, None, 900901),
    ("optional", True, "valid", "valid", 200, "oauth2", None),
    ("optional", True, "missing", "valid", 200, "oauth2", None),
    ("optional", True, "invalid", "valid", 200, "oauth2", None),
    ("optional", True, "valid", "missing", 401, None, 900902),
    ("optional", True, "valid", "invalid", 401, None, 900901),
    ("optional", True, "missing", "missing", 401, None, 900902),
    ("disabled", True, "valid", "valid", 200, "oauth2", None),
    ("disabled", True, "missing", "valid", 200, "oauth2", None),
    ("disabled", True, "valid", "missing", 401, None, 900902),
    ("disabled", True, "invalid", "invalid", 401, None, 900901),
]


@pytest.mark.parametrize("remembering", [False, True], ids=["checked", "recalled"])
@pytest.mark.parametrize("mutual_ssl, mandatory, cert, cred, status, method, code", TABLE)
async def test_decision_table(
    mutual_ssl: str,
    mandatory: bool,
    cert: str,
    cred: str,
    status: int,
    method: str | None,
    code: int | None,
    remembering: bool,
) -> None:
    app = stack(mutual_ssl, mandatory, recalling() if remembering else None)
    for _ in range(
        3 if remembering else 1
    ):  # then a remembered credential may decide without decide(), then by its raw value
        r = await call(app, "GET", "/pets/whoami", CREDS[cred], **{CERTIFICATE: CERTS[cert]})
    assert r.status == status, r.body
    if status == 200:
        doc = r.json()
        assert doc["method"] == method
        if method == "mutual_ssl":
            assert doc["alias"] == "partner-a" and doc["tier"] == "Gold" and doc["methods"] == ["mutual_ssl"]
        elif mutual_ssl != "disabled" and cert == "valid":
            assert doc["methods"] == ["mutual_ssl", "oauth2"] and doc["alias"] == "partner-a"
            assert doc["tier"] == "Silver"
    else:
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["code"] == code and r.json()["status"] == status
        assert "www-authenticate" in r.headers


async def test_schemes_in_order_absent_skipped_first_valid_wins() -> None:
    app = stack("disabled", True)
    r = await call(app, "GET", "/pets/whoami", [("x-basic", "good")])
    assert r.status == 200 and r.json()["method"] == "basic"
    r = await call(app, "GET", "/pets/whoami", [("x-token", "bad"), ("x-basic", "good")])
    assert r.status == 200 and r.json()["method"] == "basic"
    r = await call(app, "GET", "/pets/whoami", [("x-token", "good"), ("x-basic", "good")])
    assert r.json()["method"] == "oauth2"
    r = await call(app, "GET", "/pets/whoami")
    assert r.headers["www-authenticate"] == 'Oauth2 realm="test", Basic realm="test"'


async def test_resource_scopes() -> None:
    app = stack("optional", False)
    r = await call(app, "DELETE", "/pets/1", [("x-token", "good:pets:read")])
    assert r.status == 403 and r.json()["code"] == 900910
    r = await call(app, "DELETE", "/pets/1", [("x-token", "good:pets:admin")])
    assert r.status == 200
    # mutual-SSL-only access ignores scopes, as in WSO2
    r = await call(app, "DELETE", "/pets/1", **{CERTIFICATE: VALID})
    assert r.status == 200 and r.json()["method"] == "mutual_ssl"


async def test_head_is_held_to_its_get_resource_s_scopes() -> None:
    # a scoped GET-only resource: HEAD (served by the GET endpoint) needs the scope too
    cfg = parse_config(
        {
            "apis": [
                {
                    "name": "t",
                    "context": "/t",
                    "security": {"mutual_ssl": "disabled", "application": ["oauth2"]},
                    "resources": [{"path": "/t/admin", "methods": ["GET"], "scopes": ["admin"]}],
                }
            ]
        },
        base=Path("/"),
    )
    app = APISecurityMiddleware(echo_user, router=Router.from_config(cfg), authenticators=AUTHS)
    for method in ("GET", "HEAD", "HEAD"):  # the second HEAD from the remembered route
        r = await call(app, method, "/t/admin", [("x-token", "good:read")])
        assert r.status == 403, method
    assert (await call(app, "HEAD", "/t/admin", [("x-token", "good:admin")])).status == 200


async def test_one_path_routed_by_method_keeps_each_methods_rules() -> None:
    """Routes are remembered per path and, where a resource names methods, per method too."""
    app = stack("disabled", True, application=("oauth2",))
    reader = [("x-token", "good:pets:read")]
    for _ in range(2):
        assert (await call(app, "GET", "/pets/1", reader)).status == 200
        r = await call(app, "DELETE", "/pets/1", reader)
        assert (r.status, r.json()["code"]) == (403, 900910)
        assert (await call(app, "PUT", "/pets/1", reader)).status == 200
    assert (await call(app, "GET", "/pets/free")).status == 200  # public for GET only
    assert (await call(app, "POST", "/pets/free")).status == 401


async def test_public_paths_and_unknown_paths() -> None:
    app = stack("mandatory", False)
    r = await call(app, "GET", "/health")
    assert r.status == 200 and r.json() == {"authenticated": False}
    r = await call(app, "GET", "/pets/free")
    assert r.status == 200
    r = await call(app, "GET", "/elsewhere", **{CERTIFICATE: VALID})
    assert r.status == 404 and r.json()["code"] == 900906


async def test_a_public_path_is_admitted_anonymously() -> None:
    """A public path outside every API admits the anonymous caller, for HTTP and WebSocket;
    a public resource of an API (whose route depends on the method) is handed, with its route,
    to a throttling stage further in."""
    seen: list[dict[str, Any]] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.append(dict(scope))
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1000})
            return
        await echo_user(scope, receive, send)

    security = stack("mandatory", False, app=app)
    answers = [await call(security, "GET", "/health") for _ in range(3)]
    assert [(r.status, r.json()) for r in answers] == [(200, {"authenticated": False})] * 3
    assert all(not s["user"].is_authenticated and s["auth"].scopes == [] for s in seen)
    assert all(ROUTE not in s for s in seen)  # outside every API there is no route to hand over
    seen.clear()
    await security(make_scope("GET", "/health", type="websocket"), _receive, _ignore)
    assert seen[0]["type"] == "websocket" and not seen[0]["user"].is_authenticated
    for _ in range(2):
        assert (await call(security, "GET", "/pets/free")).status == 200
    assert seen[-1][ROUTE].resource.public


async def _receive() -> dict[str, Any]:
    return {"type": "websocket.connect"}


async def _ignore(message: dict[str, Any]) -> None:
    return None


@pytest.mark.parametrize(
    "mutual_ssl, mandatory", [("mandatory", False), ("mandatory", True), ("optional", False), ("optional", True)]
)
@pytest.mark.parametrize("cred", ["valid", "missing"])
async def test_malformed_certificate_header_is_400_wherever_the_certificate_is_read(
    mutual_ssl: str, mandatory: bool, cred: str
) -> None:
    bad = CertificateOutcome(
        "header", error=CertificateHeaderError("the client certificate header is not valid base64")
    )
    r = await call(stack(mutual_ssl, mandatory), "GET", "/pets/x", CREDS[cred], **{CERTIFICATE: bad})
    assert r.status == 400 and r.json()["code"] == 900900


async def test_a_malformed_certificate_header_is_not_read_where_mutual_ssl_is_disabled() -> None:
    bad = CertificateOutcome(
        "header", error=CertificateHeaderError("the client certificate header is not valid base64")
    )
    r = await call(stack("disabled", True), "GET", "/pets/x", CREDS["valid"], **{CERTIFICATE: bad})
    assert r.status == 200 and r.json()["method"] == "oauth2"


async def test_starlette_conventions() -> None:
    from starlette.applications import Starlette
    from starlette.authentication import requires
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    @requires("pets:write")
    async def write(request: Request) -> JSONResponse:
        return JSONResponse(
            {"user": request.user.display_name, "scopes": request.auth.scopes, "auth": request.user.is_authenticated}
        )

    inner = Starlette(routes=[Route("/pets/write", write)])
    cfg = parse_config(
        {
            "apis": [
                {"name": "pets", "context": "/pets", "security": {"mutual_ssl": "disabled", "application": ["oauth2"]}}
            ]
        },
        base=Path("/"),
    )
    app = APISecurityMiddleware(inner, router=Router.from_config(cfg), authenticators=AUTHS)
    r = await call(app, "GET", "/pets/write", [("x-token", "good:pets:write")])
    assert r.status == 200 and r.json() == {"user": "alice", "scopes": ["authenticated", "pets:write"], "auth": True}
    r = await call(app, "GET", "/pets/write", [("x-token", "good:pets:read")])
    assert r.status == 403


async def test_debug_header_explains() -> None:
    app = stack("optional", False, debug_headers=True)
    r = await call(app, "GET", "/pets/whoami", [("x-token", "good")])
    assert "decided by oauth2" in r.headers["x-apim-decision"]
    r = await call(app, "GET", "/pets/whoami")
    assert "rejected: 401 900902" in r.headers["x-apim-decision"]
    assert "mutual_ssl: no client certificate" in r.headers["x-apim-decision"]  # optional: not "required"


class HostileSubject(FakeAuth):
    async def authenticate(self, credential: str, api: Any, scope: dict) -> Principal:
        return Principal(
            method=self.scheme, subject="b\u2603\r\nX-Injected: 1\x00", api=api.name, tier="Silver", throttle_key="u:b"
        )


async def test_the_debug_header_carries_no_line_break_of_a_subject() -> None:
    app = stack(
        "disabled", True, {"oauth2": HostileSubject("oauth2", "x-token"), "basic": AUTHS["basic"]}, debug_headers=True
    )
    r = await call(app, "GET", "/pets/whoami", [("x-token", "whatever")])
    assert r.status == 200
    decision = r.headers["x-apim-decision"]
    assert "\r" not in decision and "\n" not in decision and "x-injected" not in r.headers
    assert "accepted b???X-Injected: 1?" in decision  # the snowman, CR and LF, NUL


async def test_the_route_reaches_a_throttling_stage_that_is_not_called_directly() -> None:
    """Fused (throttling right inside the security stage) the route is handed over in the call;
    with a layer between them it goes through the scope, and API tiers apply either way."""
    from asgi_apim.throttling import Limiter, ThrottlingMiddleware

    seen: list[dict[str, Any]] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.append(dict(scope))
        await echo_user(scope, receive, send)

    async def layer(inner: Any) -> Any:
        async def between(scope: dict[str, Any], receive: Any, send: Any) -> None:
            await inner(scope, receive, send)

        return between

    cfg = parse_config(
        {
            "public_paths": ["/health"],
            "throttling": {"tiers": {"Pair": "2/minute"}},
            "apis": [
                {
                    "name": "pets",
                    "context": "/pets",
                    "tier": "Pair",
                    "security": {"mutual_ssl": "disabled", "application": ["oauth2"]},
                }
            ],
        },
        base=Path("/"),
    )
    tiers = {"Pair": "2/minute", "Silver": "100/minute", "Unauthenticated": "100/minute"}
    for fused in (True, False):
        if fused:  # the limiter handed to the security stage: no second layer
            security = APISecurityMiddleware(
                app, router=Router.from_config(cfg), authenticators=AUTHS, limiter=Limiter(tiers=tiers)
            )
        else:
            inner = await layer(ThrottlingMiddleware(app, tiers=tiers))
            security = APISecurityMiddleware(inner, router=Router.from_config(cfg), authenticators=AUTHS)
        seen.clear()
        statuses = [(await call(security, "GET", "/pets/whoami", [("x-token", "good")])).status for _ in range(3)]
        assert statuses == [200, 200, 429]  # the API's tier, found either way
        assert (ROUTE in seen[0]) is not fused
        if not fused:
            assert seen[0][ROUTE].api.name == "pets"
        for remaining in (99, 98):
            r = await call(security, "GET", "/health")
            assert r.status == 200 and ROUTE not in seen[-1]  # outside every API there is no route to hand over
            assert (
                r.headers["ratelimit-policy"] == '"Unauthenticated";q=100;w=60'
            )  # a public path: per client, default tier
            assert r.headers["ratelimit"].startswith(f'"Unauthenticated";r={remaining};')


def test_listed_scheme_without_authenticator_is_refused() -> None:
    cfg = parse_config(
        {"apis": [{"name": "a", "context": "/a", "security": {"application": ["api_key"]}}]}, base=Path("/")
    )
    with pytest.raises(ValueError, match="api_key"):
        APISecurityMiddleware(echo_user, router=Router.from_config(cfg), authenticators=AUTHS)


async def test_a_remembered_credential_is_not_checked_again() -> None:
    auths = recalling()
    app = stack("disabled", True, auths)
    for _ in range(3):
        r = await call(app, "GET", "/pets/whoami", [("x-token", "good")])
        assert r.status == 200 and r.json()["method"] == "oauth2"
    assert auths["oauth2"].checked == 1
    assert auths["oauth2"].parsed == 3  # checked, recalled (then remembered by its raw value), and recalled before
    for _ in range(3):
        assert (await call(app, "GET", "/pets/whoami", [("x-token", "good")])).status == 200
    assert auths["oauth2"].parsed == 3, "a remembered raw value is not parsed again"


async def test_one_scheme_recalls_by_the_raw_value_and_checks_what_it_does_not_know() -> None:
    auths = recalling()
    app = stack("disabled", True, auths, application=("oauth2",))
    for _ in range(3):
        r = await call(app, "GET", "/pets/whoami", [("x-token", "good")])
        assert r.status == 200 and r.json()["method"] == "oauth2"
    assert (auths["oauth2"].checked, auths["oauth2"].parsed) == (1, 3)  # checked, recalled and remembered, found raw
    for token, status in [
        ("bad", 401),
        ("good:pets:read", 200),
        ("bad", 401),
        ("good:pets:read", 200),
    ]:  # then remembered raw
        assert (await call(app, "GET", "/pets/whoami", [("x-token", token)])).status == status
    assert (await call(app, "GET", "/pets/whoami", [])).status == 401
    for _ in range(2):  # a remembered raw value still needs the resource's scopes
        r = await call(app, "DELETE", "/pets/1", [("x-token", "good:pets:read")])
        assert (r.status, r.json()["code"]) == (403, 900910)
        assert (await call(app, "DELETE", "/pets/1", [("x-token", "good:pets:admin")])).status == 200
    assert (await call(app, "GET", "/pets/whoami", [("x-basic", "good")])).status == 401  # not a scheme of this API


async def test_a_raw_value_of_another_scheme_is_not_taken_for_this_one() -> None:
    auths = recalling()
    app = stack("disabled", True, auths)
    for _ in range(3):
        r = await call(app, "GET", "/pets/whoami", [("x-basic", "good")])
        assert r.status == 200 and r.json()["method"] == "basic"
    refused = await call(app, "GET", "/pets/whoami", [("x-token", "bad"), ("x-basic", "good")])
    assert refused.status == 200 and refused.json()["method"] == "basic"
    assert (await call(app, "GET", "/pets/whoami", [("x-token", "bad")])).status == 401


async def test_a_remembered_credential_still_needs_the_resource_scopes() -> None:
    auths = recalling()
    app = stack("disabled", True, auths)
    for _ in range(2):
        r = await call(app, "DELETE", "/pets/1", [("x-token", "good:pets:read")])
        assert (r.status, r.json()["code"]) == (403, 900910)
    for _ in range(2):
        assert (await call(app, "DELETE", "/pets/1", [("x-token", "good:pets:admin")])).status == 200


async def test_first_present_scheme_decides_even_when_a_later_one_is_remembered() -> None:
    auths = recalling()
    app = stack("disabled", True, auths)
    assert (await call(app, "GET", "/pets/whoami", [("x-basic", "good")])).json()["method"] == "basic"
    both = await call(app, "GET", "/pets/whoami", [("x-token", "bad"), ("x-basic", "good")])
    assert both.status == 200 and both.json()["method"] == "basic"  # oauth2 tried first, refused, then basic
    assert auths["oauth2"].checked == 1


async def test_explaining_never_takes_the_shortcut() -> None:
    auths = recalling()
    app = stack("disabled", True, auths, debug_headers=True)
    for _ in range(2):
        r = await call(app, "GET", "/pets/whoami", [("x-token", "good")])
        assert "decided by oauth2" in r.headers["x-apim-decision"]


class BrokenAuth(FakeAuth):
    """An authenticator with a defect: it raises what no authenticator should."""

    async def authenticate(self, credential: str, api: Any, scope: dict) -> Principal:
        raise UnicodeDecodeError("utf-8", credential.encode(), 0, 1, f"cannot read {credential}")


async def test_an_authenticator_that_fails_unexpectedly_refuses_the_credential(
    caplog: pytest.LogCaptureFixture,
) -> None:
    broken = {"oauth2": BrokenAuth("oauth2", "x-token"), "basic": FakeAuth("basic", "x-basic")}
    app = stack("disabled", True, broken)
    with caplog.at_level("DEBUG", logger="asgi_apim.auth"):
        r = await call(app, "GET", "/pets/whoami", [("x-token", "s3cret-token")])
    assert (r.status, r.json()["code"]) == (401, 900901) and "www-authenticate" in r.headers
    assert "s3cret-token" not in r.body.decode() and "s3cret-token" not in caplog.text
    assert "oauth2 authenticator failed unexpectedly (UnicodeDecodeError)" in caplog.text
    assert "in authenticate" in caplog.text  # where it failed, at DEBUG, without the message
    # the next scheme is still tried, as after any refused credential
    r = await call(app, "GET", "/pets/whoami", [("x-token", "s3cret-token"), ("x-basic", "good")])
    assert r.status == 200 and r.json()["method"] == "basic"

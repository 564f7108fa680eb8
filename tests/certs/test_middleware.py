"""`MutualTLSMiddleware` on its own (``app.add_middleware``), without a configuration file."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from starlette.applications import Starlette
from starlette.authentication import requires
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from asgi_apim import MutualTLSMiddleware
from asgi_apim._keys import CERTIFICATE
from asgi_apim.certs.pki import Issued, issue_client, make_ca, make_crl
from tests.asgi import call

HEADER = "X-WSO2-CLIENT-CERTIFICATE"


def header_for(issued: Issued) -> list[tuple[str, str]]:
    return [(HEADER, quote(issued.cert_pem().decode(), safe=""))]


@requires("authenticated")
async def whoami(request: Request) -> JSONResponse:
    user = request.user
    return JSONResponse(
        {
            "method": user.method,
            "subject": user.subject,
            "alias": user.alias,
            "tier": user.tier,
            "authenticated": user.is_authenticated,
            "scopes": request.auth.scopes,
        }
    )


async def outcome(request: Request) -> JSONResponse:
    found = request.scope[CERTIFICATE]
    return JSONResponse(
        {
            "source": found.source,
            "accepted": bool(found.verdict and found.verdict.acceptances),
            "user": request.scope.get("user") is not None,
        }
    )


class PKI:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.ca = make_ca("standalone CA")
        self.partner = issue_client(self.ca, "partner")
        self.other_ca = make_ca("other CA")
        self.stranger = issue_client(self.other_ca, "stranger")
        self.pinned = issue_client(None, "self-signed partner")  # self-signed, registered exactly
        self.ca.write(tmp / "ca.pem")
        self.pinned.write(tmp / "pinned.pem")
        (tmp / "crl.pem").write_bytes(make_crl(self.ca).public_bytes(Encoding.PEM))


@pytest.fixture
def pki(tmp_path: Path) -> PKI:
    return PKI(tmp_path)


def app_with(pki: PKI, **options: Any) -> Starlette:
    app = Starlette(routes=[Route("/whoami", whoami), Route("/outcome", outcome)])
    options.setdefault("truststore", [pki.tmp / "ca.pem"])
    options.setdefault("trusted_proxies", ["127.0.0.1/32"])  # the test client's address
    options.setdefault(
        "certificates", [("partners", pki.tmp / "ca.pem", "Gold"), ("pinned", pki.tmp / "pinned.pem", "Silver")]
    )
    app.add_middleware(MutualTLSMiddleware, **options)
    return app


async def test_header_certificate_from_a_trusted_proxy(pki: PKI) -> None:
    result = await call(app_with(pki), "GET", "/whoami", header_for(pki.partner))
    assert result.status == 200
    assert result.json() == {
        "method": "mutual_ssl",
        "subject": "CN=partner,O=asgi-apim dev",
        "alias": "partners",
        "tier": "Gold",
        "authenticated": True,
        "scopes": ["authenticated"],
    }


async def test_exact_registration_of_a_self_signed_certificate(pki: PKI) -> None:
    result = await call(app_with(pki), "GET", "/whoami", header_for(pki.pinned))
    assert (result.status, result.json()["alias"], result.json()["tier"]) == (200, "pinned", "Silver")


async def test_tls_extension_chain(pki: PKI) -> None:
    tls = {"client_cert_chain": [pki.partner.cert_pem().decode()], "server_cert": None}
    result = await call(app_with(pki), "GET", "/whoami", extensions={"tls": tls})
    assert result.status == 200 and result.json()["alias"] == "partners"


async def test_missing_and_refused_certificates(pki: PKI) -> None:
    app = app_with(pki)
    missing = await call(app, "GET", "/whoami")
    assert (missing.status, missing.json()["code"]) == (401, 900902)
    assert missing.headers["content-type"] == "application/problem+json" and "www-authenticate" in missing.headers
    stranger = await call(app, "GET", "/whoami", header_for(pki.stranger))
    assert (stranger.status, stranger.json()["code"]) == (401, 900901)
    garbage = await call(app, "GET", "/whoami", [(HEADER, "-----BEGIN%20CERTIFICATE-----garbage")])
    assert garbage.status in (400, 401) and garbage.json()["code"] in (900900, 900901)


async def test_header_from_an_untrusted_peer_is_not_believed(pki: PKI) -> None:
    result = await call(app_with(pki), "GET", "/whoami", header_for(pki.partner), client=("203.0.113.9", 4000))
    assert (result.status, result.json()["code"]) == (401, 900902)
    trusting = app_with(pki, trusted_proxies=["203.0.113.0/24"])
    assert (await call(trusting, "GET", "/whoami", header_for(pki.partner), client=("203.0.113.9", 4000))).status == 200


async def test_chain_validation_off_accepts_only_exact_registrations(pki: PKI) -> None:
    app = app_with(pki, enable_certificate_chain_validation=False)
    assert (await call(app, "GET", "/whoami", header_for(pki.partner))).status == 401
    assert (await call(app, "GET", "/whoami", header_for(pki.pinned))).status == 200


async def test_with_certificates_only_they_pass_unless_truststore_tier_is_given(pki: PKI) -> None:
    pki.other_ca.write(pki.tmp / "other-ca.pem")
    options: dict[str, Any] = {
        "truststore": [pki.tmp / "ca.pem", pki.tmp / "other-ca.pem"],
        "certificates": [("partners", pki.tmp / "ca.pem", "Gold")],
    }
    closed = app_with(pki, **options)
    assert (await call(closed, "GET", "/whoami", header_for(pki.partner))).json()["alias"] == "partners"
    refused = await call(closed, "GET", "/whoami", header_for(pki.stranger))  # validated by the truststore only
    assert (refused.status, refused.json()["code"]) == (401, 900901)
    assert "not registered" in refused.json()["detail"]
    tiered = app_with(pki, truststore_tier="Bronze", **options)
    opened = await call(tiered, "GET", "/whoami", header_for(pki.stranger))
    assert (opened.status, opened.json()["alias"], opened.json()["tier"]) == (200, None, "Bronze")
    assert (await call(tiered, "GET", "/whoami", header_for(pki.partner))).json()["tier"] == "Gold"  # CA first
    only_truststore = app_with(pki, certificates=[], truststore_tier="Silver", truststore=options["truststore"])
    assert (await call(only_truststore, "GET", "/whoami", header_for(pki.stranger))).json()["tier"] == "Silver"


async def test_not_required_only_records_the_outcome(pki: PKI) -> None:
    app = app_with(pki, required=False)
    absent = await call(app, "GET", "/outcome")
    assert absent.json() == {"source": None, "accepted": False, "user": False}
    accepted = await call(app, "GET", "/outcome", header_for(pki.partner))
    assert accepted.json() == {"source": "header", "accepted": True, "user": False}


async def test_a_cached_verdict_gives_the_same_principal(pki: PKI) -> None:
    seen: list[Any] = []

    async def capture(scope: Any, receive: Any, send: Any) -> None:
        seen.append((scope["user"], scope["auth"]))
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    mw = MutualTLSMiddleware(
        capture,
        truststore=[pki.tmp / "ca.pem"],
        certificates=[("partners", pki.tmp / "ca.pem", "Gold")],
        trusted_proxies=["127.0.0.1/32"],
    )
    for _ in range(3):
        assert (await call(mw, "GET", "/", header_for(pki.partner))).status == 204
    (user, auth), *others = seen
    assert all(u is user and a is auth for u, a in others)
    with pytest.raises(TypeError):
        user.claims["injected"] = True  # shared between requests: read-only
    assert auth.scopes == ("authenticated",)
    with pytest.raises(AttributeError):
        auth.scopes.append("admin")  # type: ignore[attr-defined]


async def test_truststore_and_crl_reload_in_the_background(pki: PKI) -> None:
    app = app_with(pki, certificates=[], crl=[pki.tmp / "crl.pem"], reload_interval=0.05)
    assert (await call(app, "GET", "/whoami", header_for(pki.stranger))).status == 401
    (pki.tmp / "ca.pem").write_bytes(pki.ca.cert_pem() + pki.other_ca.cert_pem())
    for _ in range(100):
        await asyncio.sleep(0.02)
        if (await call(app, "GET", "/whoami", header_for(pki.stranger))).status == 200:
            break
    result = await call(app, "GET", "/whoami", header_for(pki.stranger))
    assert result.status == 200 and result.json()["tier"] == "Unlimited" and result.json()["alias"] is None
    (pki.tmp / "crl.pem").write_bytes(make_crl(pki.ca, [pki.partner.cert.serial_number]).public_bytes(Encoding.PEM))
    for _ in range(100):
        await asyncio.sleep(0.02)
        if (await call(app, "GET", "/whoami", header_for(pki.partner))).status == 401:
            break
    revoked = await call(app, "GET", "/whoami", header_for(pki.partner))
    assert revoked.status == 401 and "revoked" in revoked.json()["detail"]


def test_bad_header_format_is_refused_at_construction() -> None:
    with pytest.raises(ValueError, match="header_format"):
        MutualTLSMiddleware(Starlette(), header_format="smoke-signals")

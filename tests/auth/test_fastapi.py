from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi import Depends, FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from asgi_apim.auth.fastapi import (
    current_principal,
    install_openapi,
    install_problem_handler,
    require_scopes,
    security_schemes,
)
from asgi_apim.config import Config, parse_config
from asgi_apim.errors import ConfigError
from asgi_apim.identity import Principal, set_identity
from tests.asgi import Result, call

PRINCIPALS = {
    "token": Principal(
        method="oauth2", subject="alice", api="pets", tier="Gold", scopes=("pets:read",), methods=("oauth2",)
    ),
    "writer": Principal(
        method="oauth2", subject="wendy", api="pets", scopes=("pets:read", "pets:write"), methods=("oauth2",)
    ),
    "cert": Principal(
        method="mutual_ssl", subject="CN=partner", api="pets", alias="partner-a", methods=("mutual_ssl",)
    ),
    "both": Principal(method="oauth2", subject="bob", api="pets", methods=("mutual_ssl", "oauth2")),
}


class FakeStack:
    """Stands in for the asgi-apim stack: puts the principal named by x-who into the scope."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            who = dict(scope["headers"]).get(b"x-who", b"").decode()
            set_identity(scope, PRINCIPALS.get(who))
        await self.app(scope, receive, send)


def make_app(problems: bool = True) -> FastAPI:
    app = FastAPI()

    @app.get("/pets/whoami")
    def whoami(p: Principal = Depends(current_principal)) -> dict[str, Any]:
        return p.as_dict()

    @app.delete("/pets/{pet_id}")
    def delete(pet_id: int, p: Principal = Depends(require_scopes("pets:write"))) -> dict[str, Any]:
        return {"deleted": pet_id, "by": p.subject}

    if problems:
        install_problem_handler(app)
    app.add_middleware(FakeStack)
    return app


APP = make_app()


async def get(app: Any, method: str, path: str, who: str | None = None) -> Result:
    return await call(app, method, path, [("x-who", who)] if who is not None else [])


async def test_current_principal() -> None:
    r = await get(APP, "GET", "/pets/whoami", "token")
    assert r.status == 200 and r.json()["subject"] == "alice" and r.json()["tier"] == "Gold"
    r = await get(APP, "GET", "/pets/whoami")
    assert r.status == 401 and r.headers["content-type"] == "application/problem+json"
    assert r.json()["code"] == 900902 and r.json()["instance"] == "/pets/whoami"
    assert r.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize(("who", "status"), [("token", 403), ("writer", 200), ("cert", 200), ("both", 403), ("", 401)])
async def test_require_scopes(who: str, status: int) -> None:
    r = await get(APP, "DELETE", "/pets/3", who)
    assert r.status == status
    if status == 403:
        assert r.json()["code"] == 900910 and "pets:write" in r.json()["detail"]
    if status == 200:
        assert r.json()["deleted"] == 3


async def test_without_problem_handler_fastapi_json_still_has_status() -> None:
    r = await get(make_app(problems=False), "GET", "/pets/whoami")
    assert r.status == 401 and "detail" in r.json() and "www-authenticate" in r.headers


def deployment() -> Config:
    return parse_config(
        {
            "public_paths": ["/health"],
            "key_managers": [{"name": "idp", "issuer": "https://idp.example", "jwks_url": "https://idp.example/jwks"}],
            "api_keys": {"header": "X-Key", "query_param": "key"},
            "apis": [
                {
                    "name": "pets",
                    "context": "/pets",
                    "security": {
                        "mutual_ssl": "optional",
                        "application": ["oauth2", "api_key"],
                        "application_mandatory": False,
                    },
                    "resources": [
                        {"path": "/pets/{id}", "methods": ["DELETE"], "scopes": ["pets:write"]},
                        {"path": "/pets/free", "methods": ["GET"], "public": True},
                    ],
                },
                {
                    "name": "cats",
                    "context": "/cats",
                    "security": {"mutual_ssl": "mandatory", "application": ["basic"], "application_mandatory": True},
                },
            ],
        },
        base=Path("/"),
    )


def test_security_schemes() -> None:
    schemes = security_schemes(deployment())
    assert schemes["mutualTLS"]["type"] == "mutualTLS"
    assert schemes["bearerAuth"] == {**schemes["bearerAuth"], "type": "http", "scheme": "bearer"}
    assert schemes["basicAuth"] == {"type": "http", "scheme": "basic"}
    assert schemes["apiKey"]["in"] == "header" and schemes["apiKey"]["name"] == "x-key"
    assert schemes["apiKeyQuery"] == {"type": "apiKey", "in": "query", "name": "key"}


async def test_install_openapi_documents_each_api() -> None:
    app = FastAPI()

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/pets")
    def pets() -> list[str]:
        return []

    @app.delete("/pets/{pet_id}")
    def delete(pet_id: int) -> None:
        return None

    @app.get("/pets/free")
    def free() -> None:
        return None

    @app.get("/cats")
    def cats() -> list[str]:
        return []

    install_openapi(app, deployment())
    doc = (await call(app, "GET", "/openapi.json")).json()
    assert set(doc["components"]["securitySchemes"]) == {
        "mutualTLS",
        "bearerAuth",
        "basicAuth",
        "apiKey",
        "apiKeyQuery",
    }
    paths = doc["paths"]
    assert "security" not in paths["/health"]["get"]
    assert paths["/pets"]["get"]["security"] == [
        {"mutualTLS": []},
        {"bearerAuth": []},
        {"apiKey": []},
        {"apiKeyQuery": []},
    ]
    assert {"bearerAuth": ["pets:write"]} in paths["/pets/{pet_id}"]["delete"]["security"]
    assert paths["/pets/free"]["get"]["security"] == []
    assert paths["/cats"]["get"]["security"] == [{"mutualTLS": [], "basicAuth": []}]
    assert app.openapi() is app.openapi()
    assert b"swagger" in (await call(app, "GET", "/docs")).body.lower()


def scoped_deployment(security: dict[str, Any]) -> Config:
    return parse_config(
        {
            "key_managers": [{"name": "idp", "issuer": "https://idp.example", "jwks_url": "https://idp.example/jwks"}],
            "apis": [
                {
                    "name": "pets",
                    "context": "/pets",
                    "security": security,
                    "resources": [{"path": "/pets/{id}", "methods": ["DELETE"], "scopes": ["pets:write"]}],
                }
            ],
        },
        base=Path("/"),
    )


def documented(config: Config) -> dict[str, Any]:
    app = FastAPI()

    @app.get("/pets")
    def pets() -> list[str]:
        return []

    @app.delete("/pets/{pet_id}")
    def delete(pet_id: int) -> None:
        return None

    install_openapi(app, config)
    return app.openapi()["paths"]


@pytest.mark.parametrize(
    ("security", "scoped", "unscoped"),
    [
        (  # basic carries no scopes: not listed where scopes are needed
            {"application": ["oauth2", "basic"]},
            [{"bearerAuth": ["pets:write"]}],
            [{"bearerAuth": []}, {"basicAuth": []}],
        ),
        (  # an API key issued with --scope carries them
            {"application": ["basic", "api_key"]},
            [{"apiKey": ["pets:write"]}, {"apiKeyQuery": ["pets:write"]}],
            [{"basicAuth": []}, {"apiKey": []}, {"apiKeyQuery": []}],
        ),
        (  # both required: the certificate and a credential carrying the scope
            {"mutual_ssl": "mandatory", "application": ["basic", "oauth2"], "application_mandatory": True},
            [{"mutualTLS": [], "bearerAuth": ["pets:write"]}],
            [{"mutualTLS": [], "basicAuth": []}, {"mutualTLS": [], "bearerAuth": []}],
        ),
        (  # the certificate alone passes, scopes or not (WSO2); else a token with the scope
            {"mutual_ssl": "optional", "application": ["basic", "oauth2"], "application_mandatory": False},
            [{"mutualTLS": []}, {"bearerAuth": ["pets:write"]}],
            [{"mutualTLS": []}, {"basicAuth": []}, {"bearerAuth": []}],
        ),
        (  # decided by the certificate alone: basic listed nowhere needed
            {"mutual_ssl": "mandatory", "application": ["basic"], "application_mandatory": False},
            [{"mutualTLS": []}],
            [{"mutualTLS": []}],
        ),
    ],
)
def test_scoped_resources_list_only_schemes_that_carry_scopes(
    security: dict[str, Any], scoped: list[dict[str, list[str]]], unscoped: list[dict[str, list[str]]]
) -> None:
    paths = documented(scoped_deployment(security))
    assert paths["/pets/{pet_id}"]["delete"]["security"] == scoped
    assert paths["/pets"]["get"]["security"] == unscoped


@pytest.mark.parametrize(
    "security",
    [
        {"application": ["basic"]},
        {"mutual_ssl": "optional", "application": ["basic"], "application_mandatory": True},
        {"mutual_ssl": "mandatory", "application": ["basic"], "application_mandatory": True},
    ],
)
def test_a_scoped_resource_only_basic_could_open_is_refused_at_load(security: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match=r"apis\[0\]\.resources\[0\]\.scopes: no scheme of this resource carries"):
        scoped_deployment(security)


def test_a_resource_security_of_its_own_decides_what_carries_its_scopes() -> None:
    with pytest.raises(ConfigError, match="carries scopes"):
        parse_config(
            {
                "apis": [
                    {
                        "name": "pets",
                        "context": "/pets",
                        "security": {"application": ["oauth2"]},
                        "resources": [{"path": "/pets/{id}", "scopes": ["w"], "security": {"application": ["basic"]}}],
                    }
                ]
            },
            base=Path("/"),
        )


def test_an_apis_own_credential_places_are_documented() -> None:
    from pathlib import Path

    from asgi_apim.auth.fastapi import apply_security
    from asgi_apim.config import parse_config

    raw = {
        "encryption": {"key": "ab" * 32},
        "apis": [
            {
                "name": "pets",
                "context": "/pets",
                "security": {"application": ["oauth2", "api_key"], "api_key_header": "X-Pet-Key", "api_key_query": ""},
                "resources": [
                    {"path": "/pets/own", "security": {"application": ["oauth2"], "auth_header": "X-Auth"}},
                ],
            }
        ],
    }
    cfg = parse_config(raw, base=Path("."))
    schema = {"paths": {"/pets/a": {"get": {}}, "/pets/own": {"get": {}}}}
    apply_security(schema, cfg)
    schemes = schema["components"]["securitySchemes"]  # type: ignore[index]
    assert schemes["apiKey.x-pet-key"] == {"type": "apiKey", "in": "header", "name": "x-pet-key"}  # type: ignore[index]
    assert schemes["bearerAuth.x-auth"]["name"] == "x-auth"  # type: ignore[index]
    assert schema["paths"]["/pets/a"]["get"]["security"] == [{"bearerAuth": []}, {"apiKey.x-pet-key": []}]
    assert schema["paths"]["/pets/own"]["get"]["security"] == [{"bearerAuth.x-auth": []}]

"""``[[apis]] version`` and ``default_version``: contexts, routing, the version in ``request.user``."""

from __future__ import annotations

from pathlib import Path

import pytest

from asgi_apim import protect
from asgi_apim.config import parse_config
from asgi_apim.errors import ConfigError
from asgi_apim.routing import Router
from tests.asgi import call
from tests.definitions.app import app


def config(*apis: dict[str, object], public_paths: tuple[str, ...] = ()) -> object:
    raw = {"encryption": {"key": "ab" * 32}, "public_paths": list(public_paths), "apis": list(apis)}
    return parse_config(raw, base=Path("."))


def test_the_version_is_appended_or_fills_its_field() -> None:
    cfg = config(
        {"name": "a", "context": "/pets", "version": "1.0.0"},
        {"name": "b", "context": "/shop/{version}/cats", "version": "v2", "default_version": True},
        {"name": "c", "context": "/plain"},
    )
    a, b, c = cfg.apis  # type: ignore[attr-defined]
    assert (a.context, a.contexts, a.version) == ("/pets/1.0.0", ("/pets/1.0.0",), "1.0.0")
    assert (b.context, b.contexts) == ("/shop/v2/cats", ("/shop/v2/cats", "/shop/cats"))
    assert (c.context, c.contexts, c.version) == ("/plain", ("/plain",), None)


@pytest.mark.parametrize(
    ("api", "key", "message"),
    [
        ({"context": "/p", "default_version": True}, "apis[0].default_version", "needs a version"),
        ({"context": "/p/{version}"}, "apis[0].context", "holds {version} but the API has no version"),
        ({"context": "/p", "version": "1/2"}, "apis[0].version", "must be one path segment"),
        ({"context": "/p", "version": ".."}, "apis[0].version", "must be one path segment"),
        ({"context": "/{version}/{version}", "version": "1"}, "apis[0].context", "more than once"),
    ],
)
def test_bad_versions_are_refused_naming_the_key(api: dict[str, object], key: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        config({"name": "a", **api})
    assert str(caught.value).startswith(key)


def test_a_default_versions_context_is_taken_like_any_context() -> None:
    with pytest.raises(ConfigError, match="two APIs share a context"):
        config(
            {"name": "a", "context": "/pets", "version": "1", "default_version": True},
            {"name": "b", "context": "/pets"},
        )
    with pytest.raises(ConfigError, match="covers API 'a'"):
        config({"name": "a", "context": "/pets", "version": "1", "default_version": True}, public_paths=("/pets",))
    two_versions = config(
        {"name": "pets-v1", "context": "/pets", "version": "1"},
        {"name": "pets-v2", "context": "/pets", "version": "2", "default_version": True},
    )
    router = Router.from_config(two_versions)  # type: ignore[arg-type]
    assert router.match("GET", "/pets/1/x").api.name == "pets-v1"  # type: ignore[union-attr]
    assert router.match("GET", "/pets/2/x").api.name == "pets-v2"  # type: ignore[union-attr]
    assert router.match("GET", "/pets/x").api.name == "pets-v2"  # type: ignore[union-attr]


def test_resources_written_in_full_or_relative_apply_to_both_contexts() -> None:
    resources = [
        {"path": "/pets/{id}", "methods": ["DELETE"], "scopes": ["w"]},  # in full, with the unversioned context
        {"path": "/pets/1.0.0/open", "public": True},  # in full, with the version
        {"path": "/health", "public": True},  # relative
    ]
    cfg = config({"name": "a", "context": "/pets", "version": "1.0.0", "default_version": True, "resources": resources})
    router = Router.from_config(cfg)  # type: ignore[arg-type]
    for prefix in ("/pets/1.0.0", "/pets"):
        assert router.match("DELETE", f"{prefix}/7").resource.scopes == ("w",)  # type: ignore[union-attr]
        assert router.match("GET", f"{prefix}/open").public
        assert router.match("GET", f"{prefix}/health").public
    assert not router.match("GET", "/pets/1.0.0/other").public


async def test_the_version_reaches_request_user(tmp_path: Path) -> None:
    users = tmp_path / "users.htpasswd"
    import bcrypt

    users.write_text("bob:" + bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode() + "\n")
    raw = {
        "encryption": {"key": "ab" * 32},
        "basic_auth": {"users_file": str(users)},
        "apis": [
            {
                "name": "a",
                "context": "/a",
                "version": "3.1",
                "default_version": True,
                "security": {"application": ["basic"]},
            }
        ],
    }
    stack = protect(app, parse_config(raw, base=tmp_path))
    basic = [("authorization", "Basic Ym9iOnB3")]
    for path in ("/a/3.1/x", "/a/x"):
        r = await call(stack, "GET", path, basic)
        assert r.status == 200 and r.json()["version"] == "3.1" and r.json()["subject"] == "bob"
    assert (await call(stack, "GET", "/a/3.0/x")).status == 401  # below /a: the default version's context


@pytest.mark.parametrize("explain", [False, True], ids=["fast path", "general path"])
async def test_a_certificate_caller_carries_the_version_too(tmp_path: Path, explain: bool) -> None:
    from urllib.parse import quote

    from cryptography.hazmat.primitives.serialization import Encoding

    from asgi_apim.certs.pki import issue_client, make_ca

    ca = make_ca()
    (tmp_path / "ca.pem").write_bytes(ca.cert_pem())
    client = issue_client(ca, "partner")
    raw = {
        "encryption": {"key": "ab" * 32},
        "mutual_ssl": {"truststore": ["ca.pem"], "trusted_proxies": ["127.0.0.1/32"]},
        "apis": [
            {
                "name": "certs",
                "context": "/c",
                "version": "4",
                "default_version": True,
                "security": {"mutual_ssl": "mandatory"},
                "certificates": [{"alias": "partners", "certificate": "ca.pem"}],
            }
        ],
    }
    stack = protect(app, parse_config(raw, base=tmp_path), explain=explain)
    header = [("x-wso2-client-certificate", quote(client.cert.public_bytes(Encoding.PEM).decode(), safe=""))]
    for path in ("/c/4/x", "/c/x", "/c/4/y"):
        r = await call(stack, "GET", path, header)
        assert r.status == 200, r.body
        assert (r.json()["method"], r.json()["alias"], r.json()["version"]) == ("mutual_ssl", "partners", "4")

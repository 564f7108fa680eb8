"""The admin API in front of a real stack: its own credentials, the JSON operations, its configuration."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import bcrypt
import httpx
import pytest
from cryptography.hazmat.primitives import hashes
from hypothesis import given, settings
from hypothesis import strategies as st

from asgi_apim import protect
from asgi_apim.certs.pki import Issued, issue_client, make_ca
from asgi_apim.config import load_config, parse_fingerprint
from asgi_apim.errors import ConfigError
from asgi_apim.secrets.keys import load_keyring
from asgi_apim.secrets.rotate import rotate_key
from tests.asgi import echo_user

KEY = "ef" * 32
CONFIG = """
[encryption]
key = "{key}"

[throttling.tiers]
Partner = "10/minute"

[registry]
url = "{url}"

[registry.admin]
{admin}

[[apis]]
name = "pets"
context = "/pets"
[apis.security]
mutual_ssl = "mandatory"
"""


@pytest.fixture
def ca() -> Issued:
    return make_ca("admin CA")


def write(tmp_path: Path, admin: str, url: str | None = None) -> Path:
    path = tmp_path / "deployment.toml"
    url = url or f"sqlite:///{tmp_path / 'registry.db'}"
    path.write_text(CONFIG.format(key=KEY, url=url, admin=admin))
    return path


def with_client_cert(app: Any, cert: Issued | None) -> Callable[..., Any]:
    """The app as a TLS server hands it a connection's client certificate (the ASGI TLS extension)."""

    async def tls(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if cert is not None and scope["type"] == "http":
            chain = [cert.cert_pem().decode()]
            scope = {**scope, "extensions": {"tls": {"client_cert_chain": chain, "server_cert": None}}}
        await app(scope, receive, send)

    return tls


def client(config: Path, cert: Issued | None = None, auth: tuple[str, str] | None = None) -> httpx.AsyncClient:
    app = with_client_cert(protect(echo_user, config), cert)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver", auth=auth)


def encrypted(config: Path, text: str) -> str:
    return load_keyring(config).encrypt(text)


async def test_off_by_default_the_path_belongs_to_the_stack(tmp_path: Path) -> None:
    config = write(tmp_path, "")
    async with client(config, auth=("admin", "x")) as c:
        r = await c.get("/admin/certificates")
    assert r.status_code == 404 and r.json()["code"] == 900906


async def test_basic_credentials_with_an_encrypted_password_and_every_operation(tmp_path: Path, ca: Issued) -> None:
    config = write(tmp_path, 'enabled = true\nusername = "ops"\npassword = "placeholder"')
    config.write_text(config.read_text().replace("placeholder", encrypted(config, "correct horse")))
    leaf = issue_client(ca, "partner")
    async with client(config, auth=("ops", "correct horse")) as c:
        assert (await c.get("/admin/certificates")).json() == []
        body = {"api": "pets", "alias": "p", "tier": "Partner", "certificate": leaf.cert_pem().decode()}
        r = await c.post("/admin/certificates", json=body)
        assert r.status_code == 201, r.text
        assert r.json()["alias"] == "p" and r.json()["source"] == "registry" and len(r.json()["sha256"]) == 64
        r = await c.post("/admin/certificates", json=body)
        assert r.status_code == 409 and r.headers["content-type"] == "application/problem+json"
        assert "already has a registered certificate with alias 'p'" in r.json()["detail"]
        r = await c.patch("/admin/certificates/pets/p", json={"tier": "Gold"})
        assert r.status_code == 200 and r.json() == {"api": "pets", "alias": "p", "tier": "Gold"}
        r = await c.get("/admin/certificates/pets/p")
        assert r.status_code == 200 and r.json()["tier"] == "Gold" and r.json()["subject"].startswith("CN=partner")
        assert [x["alias"] for x in (await c.get("/admin/certificates", params={"api": "pets"})).json()] == ["p"]
        assert (await c.delete("/admin/certificates/pets/p")).status_code == 204
        r = await c.delete("/admin/certificates/pets/p")
        assert r.status_code == 404 and r.json()["status"] == 404
        assert (await c.get("/admin/certificates/pets/p")).status_code == 404
        assert (await c.get("/admin/nothing-here")).status_code == 404


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ({"api": "nope", "alias": "p", "tier": "Gold"}, "unknown API 'nope'"),
        ({"api": "pets", "alias": "p", "tier": "Tin"}, "unknown tier 'Tin'"),
        ({"api": "pets", "alias": "p", "tier": "Gold", "certificate": "-----BEGIN PRIVATE KEY-----"}, "private key"),
        ({"api": "pets", "alias": "p", "tier": "Gold", "certificate": "hello"}, "is not a certificate"),
        ({"api": "pets", "alias": "p"}, "needs string field(s): tier, certificate"),
        ([1, 2], "must be a JSON object"),
    ],
)
async def test_bad_requests_are_400_problems(tmp_path: Path, ca: Issued, body: Any, detail: str) -> None:
    config = write(tmp_path, 'enabled = true\nusername = "ops"\npassword = "pw-for-tests"')
    if isinstance(body, dict) and "certificate" not in body and "tier" in body:
        body["certificate"] = issue_client(ca).cert_pem().decode()
    async with client(config, auth=("ops", "pw-for-tests")) as c:
        r = await c.post("/admin/certificates", json=body)
        assert r.status_code == 400 and detail in r.json()["detail"] and r.json()["code"] == 900900
        r = await c.post("/admin/certificates", content=b"{not json", headers={"content-type": "application/json"})
        assert r.status_code == 400 and r.json()["detail"] == "the body is not JSON"


async def test_missing_or_wrong_credentials_are_401_and_api_credentials_do_not_count(
    tmp_path: Path, ca: Issued
) -> None:
    leaf = issue_client(ca, "api caller")
    leaf.write(tmp_path / "caller.pem")
    config = write(tmp_path, 'enabled = true\nusername = "ops"\npassword = "pw-for-tests"')
    config.write_text(
        config.read_text() + '[[apis.certificates]]\nalias = "caller"\ncertificate = "caller.pem"\ntier = "Gold"\n'
    )
    async with client(config, cert=leaf) as c:  # a certificate the API accepts is not an admin credential
        assert (await c.get("/pets/x")).status_code == 200
        r = await c.get("/admin/certificates")
        assert r.status_code == 401 and r.json()["code"] == 900902
        assert r.headers["www-authenticate"] == 'Basic realm="asgi-apim admin"'
        r = await c.get("/admin/certificates", auth=("ops", "wrong"))
        assert r.status_code == 401 and r.json()["code"] == 900901 and "wrong" not in r.text
        r = await c.get("/admin/certificates", headers={"authorization": "Bearer abc"})
        assert r.status_code == 401 and r.json()["code"] == 900901


async def test_a_users_file_of_bcrypt_entries(tmp_path: Path) -> None:
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode().replace("$2b$", "$2y$", 1)
    (tmp_path / "admin.htpasswd").write_text(f"alice:{hashed}\n")
    config = write(tmp_path, 'enabled = true\nusers_file = "admin.htpasswd"')
    async with client(config) as c:
        assert (await c.get("/admin/certificates", auth=("alice", "s3cret"))).status_code == 200
        assert (await c.get("/admin/certificates", auth=("alice", "nope"))).status_code == 401
        assert (await c.get("/admin/certificates", auth=("bob", "s3cret"))).status_code == 401


async def test_a_client_certificate_byparse_fingerprint(tmp_path: Path, ca: Issued) -> None:
    admin, stranger = issue_client(ca, "admin"), issue_client(ca, "stranger")
    fingerprint = ":".join(f"{b:02X}" for b in admin.cert.fingerprint(hashes.SHA256()))
    config = write(tmp_path, f'enabled = true\npath = "/ops/registry"\nclient_certificates = ["{fingerprint}"]')
    async with client(config, cert=admin) as c:
        assert (await c.get("/ops/registry/certificates")).status_code == 200
    async with client(config, cert=stranger) as c:
        r = await c.get("/ops/registry/certificates")
        assert r.status_code == 401 and "www-authenticate" not in r.headers
    async with client(config) as c:
        assert (await c.get("/ops/registry/certificates")).status_code == 401


async def test_an_unreachable_database_is_503(tmp_path: Path) -> None:
    config = write(
        tmp_path, 'enabled = true\nusername = "ops"\npassword = "pw-for-tests"', url="postgresql://u:pw@127.0.0.1:1/x"
    )
    async with client(config, auth=("ops", "pw-for-tests")) as c:
        r = await c.get("/admin/certificates")
    assert r.status_code == 503 and "cannot be reached" in r.json()["detail"] and "pw@" not in r.text


@pytest.mark.parametrize(
    ("admin", "key", "message"),
    [
        ("enabled = true", "registry.admin", "without credentials"),
        ('enabled = true\nusername = "ops"', "registry.admin.password", "is needed too"),
        ('enabled = true\nclient_certificates = ["zz"]', "registry.admin.client_certificates[0]", "fingerprint"),
        ('enabled = true\npath = "/pets"\nusername = "a"\npassword = "bbbb"', "registry.admin.path", "overlaps"),
        ('enabled = true\npath = "/"\nusername = "a"\npassword = "bbbb"', "registry.admin.path", "must not be /"),
        ("enabled = true\ncolour = 1", "registry.admin.colour", ""),
    ],
)
def test_configuration_errors_name_the_key(tmp_path: Path, admin: str, key: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, admin))
    assert str(info.value).startswith(key) and message in str(info.value)


def test_registry_keys_are_parsed(tmp_path: Path) -> None:
    path = tmp_path / "d.toml"
    path.write_text(f'[encryption]\nkey = "{KEY}"\n[registry]\nexpiry_warning_days = 7\n')
    cfg = load_config(path)
    assert cfg.registry.url == f"sqlite:///{tmp_path / 'registry.db'}" and cfg.registry.expiry_warning_days == 7
    assert not cfg.registry.admin.enabled and cfg.registry.admin.path == "/admin"
    path.write_text(f'[encryption]\nkey = "{KEY}"\n[registry]\nurl = "mysql://x"\n')
    with pytest.raises(ConfigError, match=r"^registry\.url"):
        load_config(path)
    path.write_text(f'[encryption]\nkey = "{KEY}"\n')
    assert load_config(path).registry.url is None


def test_rotate_key_re_encrypts_the_admin_password(tmp_path: Path) -> None:
    config = write(tmp_path, 'enabled = true\nusername = "ops"\npassword = "placeholder"')
    ciphertext = encrypted(config, "correct horse")
    config.write_text(config.read_text().replace("placeholder", ciphertext))
    result = rotate_key(config, "12" * 32)
    assert result.values == 1
    text = config.read_text()
    assert ciphertext not in text and "12" * 32 in text
    assert load_config(config).registry.admin.password == "correct horse"


@settings(max_examples=100, deadline=None)
@given(digest=st.binary(min_size=32, max_size=32), sep=st.sampled_from(["", ":", " "]), upper=st.booleans())
def test_fingerprints_are_read_in_any_usual_spelling(digest: bytes, sep: str, upper: bool) -> None:
    text = sep.join(f"{b:02x}" for b in digest)
    assert parse_fingerprint("k", text.upper() if upper else text) == digest.hex()


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=100))
def test_anything_else_is_not_aparse_fingerprint(text: str) -> None:
    digits = text.replace(":", "").replace(" ", "").lower()
    if len(digits) == 64 and all(c in "0123456789abcdef" for c in digits):
        return
    with pytest.raises(ConfigError, match="is not a SHA-256 fingerprint"):
        parse_fingerprint("k", text)

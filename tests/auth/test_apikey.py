from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from asgi_apim.auth.apikey import ApiKeyAuthenticator, issue_api_key
from asgi_apim.auth.subscriptions import NotSubscribed
from asgi_apim.cli import main
from asgi_apim.config import ApiConfig, load_config
from asgi_apim.errors import ConfigError, InvalidCredentials

PETS = ApiConfig(name="pets", context="/pets")
CATS = ApiConfig(name="cats", context="/cats")

KEYS = {
    "Ed25519": (lambda: ed25519.Ed25519PrivateKey.generate(), "EdDSA"),
    "EC-P256": (lambda: ec.generate_private_key(ec.SECP256R1()), "ES256"),
    "EC-P384": (lambda: ec.generate_private_key(ec.SECP384R1()), "ES384"),
    "RSA": (lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS256"),
}


def write_key(path: Path, key: Any) -> None:
    path.write_bytes(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))


def write_config(tmp_path: Path, key: Any | None = None, *, revoked: tuple[str, ...] = (), extra: str = "") -> Path:
    if key is not None:
        write_key(tmp_path / "signing.pem", key)
    lines = [
        "[encryption]",
        f'key = "{"ab" * 32}"',
        "[api_keys]",
        'signing_key = "signing.pem"' if key is not None else "",
    ]
    lines.append(f"revoked = [{', '.join(repr(r) for r in revoked)}]")
    lines.append(extra)
    for name in ("pets", "cats"):
        lines += [
            "[[apis]]",
            f'name = "{name}"',
            f'context = "/{name}"',
            "[apis.security]",
            'application = ["api_key"]',
        ]
    path = tmp_path / "deployment.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "asgi_apim.cli", *args], capture_output=True, text=True, timeout=60)


def issue(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return cli("apikey", "issue", "--config", str(config), *args)


def scope(header: tuple[str, str] | None = None, query: str = "") -> dict[str, Any]:
    headers = [] if header is None else [(header[0].encode(), header[1].encode())]
    return {"type": "http", "headers": headers, "query_string": query.encode()}


@pytest.mark.parametrize("kind", ["Ed25519", "EC-P256", "RSA"])
async def test_issue_round_trip_through_the_cli(tmp_path: Path, kind: str) -> None:
    make, alg = KEYS[kind]
    config = write_config(tmp_path, make())
    done = issue(config, "--api", "pets", "--tier", "Gold", "--subject", "partner-a", "--expires", "600")
    assert done.returncode == 0, done.stderr
    token = done.stdout.strip()
    assert done.stdout.count("\n") == 1 and done.stderr == ""
    assert jwt.get_unverified_header(token)["alg"] == alg
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["apis"] == ["pets"] and claims["iss"] == "asgi-apim" and claims["exp"] - claims["iat"] == 600

    auth = ApiKeyAuthenticator.from_config(load_config(config))
    credential = auth.credential(scope(("apikey", token)))
    assert credential == token
    p = await auth.authenticate(credential, PETS, {})
    assert (p.method, p.subject, p.tier, p.api) == ("api_key", "partner-a", "Gold", "pets")
    assert p.throttle_key == f"key:{claims['jti']}"
    with pytest.raises(NotSubscribed, match="not subscribed to API 'cats'") as info:  # WSO2: 403, 900908
        await auth.authenticate(token, CATS, {})
    assert (info.value.status, info.value.code) == (403, 900908)


def test_other_key_types_are_supported_in_process(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path, KEYS["EC-P384"][0]()))
    token = issue_api_key(config, "pets", "Bronze", scopes=("pets:read",))
    assert jwt.get_unverified_header(token)["alg"] == "ES384"
    assert jwt.decode(token, options={"verify_signature": False})["scope"] == "pets:read"


async def test_expired_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = write_config(tmp_path, KEYS["Ed25519"][0]())
    token = issue(config, "--api", "pets", "--tier", "Gold", "--expires", "5").stdout.strip()
    auth = ApiKeyAuthenticator.from_config(load_config(config))
    assert (await auth.authenticate(token, PETS, {})).tier == "Gold"
    monkeypatch.setattr("asgi_apim.auth.apikey.now", lambda: time.time() + 60)
    with pytest.raises(InvalidCredentials, match="expired"):
        await auth.authenticate(token, PETS, {})


async def test_revoked_jti(tmp_path: Path) -> None:
    key = KEYS["Ed25519"][0]()
    config = write_config(tmp_path, key)
    token = issue(config, "--api", "pets", "--tier", "Gold").stdout.strip()
    keep = issue_api_key(load_config(config), "pets", "Gold")
    jti = jwt.decode(token, options={"verify_signature": False})["jti"]
    config = write_config(tmp_path, key, revoked=(jti,))
    auth = ApiKeyAuthenticator.from_config(load_config(config))
    with pytest.raises(InvalidCredentials, match="revoked"):
        await auth.authenticate(token, PETS, {})
    assert (await auth.authenticate(keep, PETS, {})).method == "api_key"


def test_unknown_api_or_tier_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path, KEYS["Ed25519"][0]())
    done = issue(config, "--api", "dogs", "--tier", "Gold")
    assert done.returncode == 1 and done.stdout == ""
    assert "unknown API 'dogs'" in done.stderr and done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    code, out, err = in_process(capsys, "--config", str(config), "--api", "pets", "--tier", "Platinum")
    assert code == 1 and out == "" and "unknown tier 'Platinum'" in err and err.count("\n") == 1


def in_process(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    try:
        code = main(["apikey", "issue", *args])
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_missing_signing_key_and_bad_usage(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = in_process(capsys, "--config", str(write_config(tmp_path)), "--api", "pets", "--tier", "Gold")
    assert code == 1 and "api_keys.signing_key" in err and out == ""
    config = str(write_config(tmp_path, KEYS["Ed25519"][0]()))
    code, out, err = in_process(capsys, "--config", config, "--api", "pets", "--tier", "Gold", "--expires", "soon")
    assert code == 2 and out == "" and "--expires" in err
    code, out, err = in_process(capsys, "--config", config, "--api", "pets")
    assert code == 2 and "--tier" in err


def test_authenticator_needs_a_usable_signing_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="api_keys.signing_key"):
        ApiKeyAuthenticator.from_config(load_config(write_config(tmp_path)))
    config = load_config(write_config(tmp_path, ec.generate_private_key(ec.SECP256K1())))
    with pytest.raises(ConfigError, match="api_keys.signing_key"):
        ApiKeyAuthenticator.from_config(config)


async def test_forged_and_foreign_keys(tmp_path: Path) -> None:
    key = KEYS["Ed25519"][0]()
    config = load_config(write_config(tmp_path, key))
    auth = ApiKeyAuthenticator.from_config(config)
    good = jwt.decode(issue_api_key(config, "pets", "Gold"), options={"verify_signature": False})
    forged = jwt.encode(good, ed25519.Ed25519PrivateKey.generate(), algorithm="EdDSA")
    with pytest.raises(InvalidCredentials, match="signature"):
        await auth.authenticate(forged, PETS, {})
    hs = jwt.encode(good, "secret-secret-secret-secret-secret", algorithm="HS256")
    with pytest.raises(InvalidCredentials, match="algorithm"):
        await auth.authenticate(hs, PETS, {})
    with pytest.raises(InvalidCredentials, match="malformed"):
        await auth.authenticate("not-a-key", PETS, {})
    foreign = jwt.encode(dict(good, iss="someone"), key, algorithm="EdDSA")
    with pytest.raises(InvalidCredentials, match="not issued by a trusted issuer"):
        await auth.authenticate(foreign, PETS, {})
    with pytest.raises(InvalidCredentials, match="16 KiB"):
        await auth.authenticate(jwt.encode(dict(good, pad="x" * 60_000), key, algorithm="EdDSA"), PETS, {})


def test_credential_from_header_or_query(tmp_path: Path) -> None:
    config = load_config(
        write_config(tmp_path, KEYS["Ed25519"][0](), extra='header = "X-API-Key"\nquery_param = "key"')
    )
    auth = ApiKeyAuthenticator.from_config(config)
    assert auth.credential(scope(("x-api-key", "abc"))) == "abc"
    assert auth.credential(scope(query="a=1&key=q%2Bv&b=2")) == "q+v"
    assert auth.credential(scope(("x-api-key", "hdr"), query="key=qry")) == "hdr"
    assert auth.credential(scope(query="monkey=1&keys=2")) is None
    assert auth.credential(scope(("apikey", "abc"))) is None


async def test_recall_only_for_keys_validated_before_and_for_their_apis(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write_config(tmp_path, KEYS["Ed25519"][0]())
    token = issue(config, "--api", "pets", "--tier", "Gold", "--expires", "30").stdout.strip()
    auth = ApiKeyAuthenticator.from_config(load_config(config))
    assert auth.recall(token, PETS) is None
    checked = await auth.authenticate(token, PETS, {})
    assert auth.recall(token, PETS) is checked
    assert auth.recall(token, CATS) is None  # not one of its APIs: the full check refuses it
    auth.remember(f" {token} ".encode(), token)
    assert (
        auth.recall_raw(f" {token} ".encode(), PETS) is checked and auth.recall_raw(f" {token} ".encode(), CATS) is None
    )
    monkeypatch.setattr("asgi_apim.auth.apikey.now", lambda: time.time() + 120)
    assert auth.recall(token, PETS) is None
    assert auth.recall_raw(f" {token} ".encode(), PETS) is None


def _config_with(tmp_path: Path, security: str, resource: str = "") -> Path:
    write_key(tmp_path / "signing.pem", KEYS["Ed25519"][0]())
    text = (
        f'[encryption]\nkey = "{"ab" * 32}"\n[api_keys]\nsigning_key = "signing.pem"\n'
        f'[[apis]]\nname = "pets"\ncontext = "/pets"\n[apis.security]\n{security}\n{resource}'
    )
    path = tmp_path / "deployment.toml"
    path.write_text(text)
    return path


def test_issue_for_an_api_that_accepts_no_api_keys_exits_1_naming_the_api_and_the_fix(tmp_path: Path) -> None:
    config = _config_with(tmp_path, 'application = ["oauth2", "basic"]')
    done = issue(config, "--api", "pets", "--tier", "Gold")
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert "API 'pets' does not accept API keys" in done.stderr
    assert 'add "api_key" to its [apis.security] application' in done.stderr
    assert 'application = ["oauth2", "basic", "api_key"]' in done.stderr


def test_issue_when_mutual_ssl_alone_decides_exits_1(tmp_path: Path) -> None:
    config = _config_with(
        tmp_path, 'mutual_ssl = "mandatory"\napplication = ["api_key"]\napplication_mandatory = false'
    )
    done = issue(config, "--api", "pets", "--tier", "Gold")
    assert done.returncode == 1 and done.stdout == ""
    assert "decided by mutual_ssl" in done.stderr and "application_mandatory = true" in done.stderr


@pytest.mark.parametrize(
    ("security", "resource"),
    [
        ('mutual_ssl = "mandatory"\napplication = ["api_key"]\napplication_mandatory = true', ""),
        ('mutual_ssl = "optional"\napplication = ["oauth2", "api_key"]', ""),
        (
            'application = ["oauth2"]',
            '[[apis.resources]]\npath = "/pets/{id}"\nsecurity = { application = ["api_key"] }\n',
        ),
    ],
)
def test_issue_for_an_api_or_a_resource_that_reads_keys(tmp_path: Path, security: str, resource: str) -> None:
    done = issue(_config_with(tmp_path, security, resource), "--api", "pets", "--tier", "Gold")
    assert done.returncode == 0, done.stderr
    assert jwt.decode(done.stdout.strip(), options={"verify_signature": False})["apis"] == ["pets"]


def test_issue_never_writes_the_configuration(tmp_path: Path) -> None:
    write_key(tmp_path / "signing.pem", KEYS["Ed25519"][0]())
    path = tmp_path / "deployment.toml"
    path.write_text(
        '# no [encryption] key: issuing a key must not add one\n[api_keys]\nsigning_key = "signing.pem"\n'
        '[[apis]]\nname = "pets"\ncontext = "/pets"\n[apis.security]\napplication = ["api_key"]\n'
    )
    before = path.read_bytes(), path.stat().st_mtime_ns
    done = issue(path, "--api", "pets", "--tier", "Gold")
    assert done.returncode == 0, done.stderr
    assert (path.read_bytes(), path.stat().st_mtime_ns) == before
    assert "ALERT" not in done.stderr

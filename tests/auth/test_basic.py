from __future__ import annotations

import base64
import logging
import subprocess
import threading
from pathlib import Path
from typing import Any

import bcrypt
import pytest

from asgi_apim.auth.basic import BasicAuthenticator, parse_htpasswd
from asgi_apim.config import ApiConfig
from asgi_apim.errors import ConfigError, InvalidCredentials

API = ApiConfig(name="pets", context="/pets")


def htpasswd(path: Path, *args: str, batch: bool = True) -> None:
    flags = ([] if path.exists() else ["-c"]) + (["-b"] if batch else [])
    subprocess.run(["htpasswd", *flags, *args], cwd=path.parent, check=True, capture_output=True, timeout=30)


def add(path: Path, user: str, password: str) -> None:
    htpasswd(path, "-B", "-C", "4", str(path), user, password)


def basic(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.fixture
def users(tmp_path: Path) -> Path:
    path = tmp_path / "users.htpasswd"
    add(path, "alice", "secret")
    add(path, "bob", "hunter2 with spaces")
    add(path, "long", "x" * 80)
    return path


@pytest.fixture
def checks(monkeypatch: pytest.MonkeyPatch) -> list[tuple[bytes, str]]:
    """Every bcrypt.checkpw call: the hash it compared against and the thread it ran on."""
    calls: list[tuple[bytes, str]] = []
    real = bcrypt.checkpw

    def spy(password: bytes, hashed: bytes) -> bool:
        calls.append((hashed, threading.current_thread().name))
        return real(password, hashed)

    monkeypatch.setattr(bcrypt, "checkpw", spy)
    return calls


async def test_entries_made_by_htpasswd(users: Path) -> None:
    auth = BasicAuthenticator(users, tier="Silver")
    p = await auth.authenticate(basic("alice", "secret"), API, {})
    assert (p.method, p.subject, p.api, p.tier, p.throttle_key) == ("basic", "alice", "pets", "Silver", "user:alice")
    assert (await auth.authenticate(basic("bob", "hunter2 with spaces"), API, {})).subject == "bob"
    assert (await auth.authenticate(basic("long", "x" * 80), API, {})).subject == "long"
    assert users.read_text().startswith("alice:$2y$04$")


@pytest.mark.parametrize(("user", "password"), [("alice", "wrong"), ("mallory", "secret"), ("alice", "")])
async def test_wrong_password_and_unknown_user_look_alike(
    users: Path, checks: list[tuple[bytes, str]], user: str, password: str
) -> None:
    auth = BasicAuthenticator(users)
    with pytest.raises(InvalidCredentials) as info:
        await auth.authenticate(basic(user, password), API, {})
    assert info.value.detail == "invalid user name or password"
    assert info.value.headers["www-authenticate"].startswith('Basic realm="asgi-apim"')
    assert password not in info.value.detail or not password
    # one bcrypt check of the file's cost either way, in a worker thread
    [(hashed, thread)] = checks
    assert hashed[4:6] == b"04" and thread != threading.main_thread().name


async def test_success_is_cached_under_a_digest(users: Path, checks: list[tuple[bytes, str]]) -> None:
    auth = BasicAuthenticator(users)
    for _ in range(3):
        await auth.authenticate(basic("alice", "secret"), API, {})
    assert len(checks) == 1
    with pytest.raises(InvalidCredentials):
        await auth.authenticate(basic("alice", "Secret"), API, {})
    assert len(checks) == 2
    assert all(isinstance(k, bytes) and b"secret" not in k for k in auth._cache._data)


@pytest.mark.parametrize(
    ("maker", "kind"),
    [(["-m"], "MD5"), (["-s"], "SHA1"), (["-p"], "plain"), (["-d"], "crypt")],
)
def test_non_bcrypt_entries_are_refused_at_load(users: Path, maker: list[str], kind: str) -> None:
    htpasswd(users, *maker, str(users), "carol", "pw")
    line = users.read_text().splitlines()[-1]
    with pytest.raises(ConfigError) as info:
        BasicAuthenticator(users)
    message = str(info.value)
    assert "basic_auth.users_file" in message and "line 4" in message and "bcrypt" in message
    assert line.split(":", 1)[1] not in message


def test_parse_htpasswd_skips_comments_and_rejects_garbage() -> None:
    entry = bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode()
    assert parse_htpasswd(f"# users\n\nann:{entry}\n") == {"ann": entry.encode()}
    with pytest.raises(ValueError, match="line 1: expected user:hash"):
        parse_htpasswd("no-colon-here\n")
    with pytest.raises(ValueError, match="line 2"):
        parse_htpasswd(f"ann:{entry}\nben:$2y$xx$" + "a" * 53 + "\n")


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="basic_auth.users_file"):
        BasicAuthenticator(tmp_path / "nope.htpasswd")


async def test_reload_on_change(users: Path, caplog: pytest.LogCaptureFixture) -> None:
    auth = BasicAuthenticator(users, check_interval=0)
    with pytest.raises(InvalidCredentials):
        await auth.authenticate(basic("dave", "pw1"), API, {})
    add(users, "dave", "pw1")
    assert (await auth.authenticate(basic("dave", "pw1"), API, {})).subject == "dave"
    add(users, "dave", "pw2")  # a changed password invalidates the cached success
    with pytest.raises(InvalidCredentials):
        await auth.authenticate(basic("dave", "pw1"), API, {})
    htpasswd(users, "-D", str(users), "alice", batch=False)
    with pytest.raises(InvalidCredentials):
        await auth.authenticate(basic("alice", "secret"), API, {})
    # a broken file keeps the last good users, loudly
    users.write_text(users.read_text() + "eve:{SHA}GpHWL3ymc5liWkNopqtdSjuqYHM=\n")
    with caplog.at_level(logging.ERROR, logger="asgi_apim.auth.basic"):
        assert (await auth.authenticate(basic("dave", "pw2"), API, {})).subject == "dave"
    assert "cannot reload" in caplog.text and "GpHWL3" not in caplog.text


async def test_reload_is_checked_at_most_once_per_interval(users: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    auth = BasicAuthenticator(users, check_interval=3600)
    stats: list[Any] = []
    monkeypatch.setattr(auth, "_reload_if_changed", lambda: stats.append(1))
    add(users, "frank", "pw")
    with pytest.raises(InvalidCredentials):
        await auth.authenticate(basic("frank", "pw"), API, {})
    assert stats == []


@pytest.mark.parametrize(
    "credential",
    [
        "not base64!",
        base64.b64encode(b"no-colon").decode(),
        basic("", "pw"),
        "A" * 5000,
        base64.b64encode(b"\xff\xfe:x").decode(),
    ],
)
async def test_malformed_credentials(users: Path, credential: str) -> None:
    auth = BasicAuthenticator(users)
    with pytest.raises(InvalidCredentials):
        await auth.authenticate(credential, API, {})


def test_credential_extraction(users: Path) -> None:
    auth = BasicAuthenticator(users, realm="pets")
    assert auth.credential({"headers": [(b"authorization", b"Basic YTpi")]}) == "YTpi"
    assert auth.credential({"headers": [(b"authorization", b"Bearer abc")]}) is None
    assert auth.credential({"headers": []}) is None
    assert auth.challenge.startswith('Basic realm="pets"')

"""Diagnostics (``check``, ``check --request``, ``decrypt``, ``apikey issue``) only read the
configuration: a file without ``[encryption] key`` stays byte-identical. Start-up
(`load_config`, ``protect()``, ``serve``) keeps generating, writing and alerting."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from asgi_apim.certs.pki import issue_client, make_ca
from asgi_apim.config import load_config
from asgi_apim.errors import ConfigError

CONFIG = """\
# a configuration without [encryption] key: diagnostics must leave it as it is
public_paths = ["/health"]

[mutual_ssl]
trusted_proxies = ["127.0.0.1/32"]

[[apis]]
name = "pets"
context = "/pets"

[apis.security]
mutual_ssl = "mandatory"

[[apis.certificates]]
alias = "partner"
certificate = "ca.pem"
tier = "Gold"
"""


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, Path]:
    ca = make_ca("diagnostics CA")
    ca.write(tmp_path / "ca.pem", tmp_path / "ca.key")
    issue_client(ca, "partner").write(tmp_path / "client.pem", tmp_path / "client.key")
    path = tmp_path / "deployment.toml"
    path.write_text(CONFIG)
    return path, tmp_path / "client.pem"


def cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "asgi_apim.cli", *args], capture_output=True, text=True, input=stdin, timeout=60
    )


def snapshot(path: Path) -> tuple[bytes, int, list[str]]:
    return path.read_bytes(), path.stat().st_mtime_ns, sorted(p.name for p in path.parent.iterdir())


def test_check_a_certificate_leaves_the_file_byte_identical(setup: tuple[Path, Path]) -> None:
    path, client = setup
    before = snapshot(path)
    done = cli("check", "--config", str(path), str(client))
    assert done.returncode == 0, done.stderr
    assert "pets: accepted, alias partner, tier Gold" in done.stdout
    assert snapshot(path) == before
    assert "ALERT" not in done.stderr


def test_check_a_request_leaves_the_file_byte_identical(setup: tuple[Path, Path]) -> None:
    path, client = setup
    before = snapshot(path)
    done = cli("check", "--config", str(path), "--request", "GET /pets/1", "--cert", str(client))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "result: 200" in done.stdout
    assert snapshot(path) == before


def test_check_of_an_encrypted_value_without_a_key_says_so_and_writes_nothing(setup: tuple[Path, Path]) -> None:
    path, client = setup
    path.write_text(
        CONFIG.replace(
            'public_paths = ["/health"]',
            f'public_paths = ["/health"]\n[secrets]\nx = "aesgcm:v1:0123456789abcdef:AAAAAAAAAAAAAAAA:{"A" * 44}"',
        )
    )
    before = snapshot(path)
    done = cli("check", "--config", str(path), str(client))
    assert done.returncode == 1
    assert "no [encryption] key is configured" in done.stderr and done.stderr.count("\n") == 1
    assert snapshot(path) == before


def test_decrypt_without_a_key_exits_1_and_writes_nothing(setup: tuple[Path, Path]) -> None:
    path, _ = setup
    before = snapshot(path)
    done = cli("decrypt", "--config", str(path), stdin="aesgcm:v1:0123456789abcdef:AAAA:AAAA")
    assert done.returncode == 1 and done.stdout == ""
    assert "encryption.key: is not set" in done.stderr and done.stderr.count("\n") == 1
    assert snapshot(path) == before


def test_load_config_read_only_keeps_the_key_absent(setup: tuple[Path, Path]) -> None:
    path, _ = setup
    before = snapshot(path)
    assert load_config(path, read_only=True).encryption.key is None
    assert snapshot(path) == before


def test_start_up_still_generates_and_writes_the_key(setup: tuple[Path, Path]) -> None:
    path, _ = setup
    cfg = load_config(path)  # what protect() and serve do
    text = path.read_text()
    assert text.startswith(CONFIG)
    assert tomllib.loads(text)["encryption"]["key"] == cfg.encryption.key


def test_read_only_still_refuses_a_broken_file(setup: tuple[Path, Path]) -> None:
    path, _ = setup
    path.write_text(CONFIG + "bogus = 1\n")
    with pytest.raises(ConfigError, match="bogus"):
        load_config(path, read_only=True)

"""The secrets commands, run as a user runs them: ``asgi-apim ...`` in a subprocess."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from asgi_apim.secrets import Envelope, Keyring, generate_key, key_id

_local = Path(sys.executable).parent / "asgi-apim"
ASGI_APIM = str(_local) if _local.exists() else shutil.which("asgi-apim") or "asgi-apim"
KEY = generate_key()


def run(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([ASGI_APIM, *args], input=stdin, capture_output=True, timeout=30)


def one_error_line(proc: subprocess.CompletedProcess[bytes]) -> str:
    lines = proc.stderr.decode().strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in lines[0]
    return lines[0]


@pytest.fixture
def conf(tmp_path: Path) -> Path:
    path = tmp_path / "deployment.toml"
    path.write_text(f'# ops\n[encryption]\nkey = "{KEY}"\n')
    return path


def test_keygen() -> None:
    first, second = run("keygen"), run("keygen")
    assert first.returncode == 0 and first.stderr == b""
    assert re.fullmatch(rb"[0-9a-f]{64}\n", first.stdout)
    assert first.stdout != second.stdout


def test_encrypt_then_decrypt(conf: Path) -> None:
    enc = run("encrypt", "--config", str(conf), stdin="pässwörd with spaces \n".encode())
    assert enc.returncode == 0 and enc.stderr == b""
    text = enc.stdout.decode()
    assert text.endswith("\n") and text.count("\n") == 1
    assert Envelope.parse(text.strip()).kid == key_id(bytes.fromhex(KEY))
    assert Keyring(bytes.fromhex(KEY)).decrypt(text.strip()) == "pässwörd with spaces "
    dec = run("decrypt", "--config", str(conf), stdin=enc.stdout)
    assert dec.returncode == 0 and dec.stdout.decode() == "pässwörd with spaces \n"


@pytest.mark.parametrize(
    ("given", "sealed"),
    [(b"a\n\n", "a\n"), (b"a\r\n", "a"), (b"  a  ", "  a  ")],
)
def test_encrypt_strips_exactly_one_trailing_newline(conf: Path, given: bytes, sealed: str) -> None:
    enc = run("encrypt", "--config", str(conf), stdin=given)
    assert enc.returncode == 0
    assert Keyring(bytes.fromhex(KEY)).decrypt(enc.stdout.decode().strip()) == sealed


def test_decrypt_with_a_wrong_key_prints_nothing_and_one_line(conf: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.toml"
    other.write_text(f'[encryption]\nkey = "{generate_key()}"\n')
    sealed = Keyring(bytes.fromhex(KEY)).encrypt("top secret")
    proc = run("decrypt", "--config", str(other), stdin=sealed.encode())
    assert proc.returncode == 1 and proc.stdout == b""
    line = one_error_line(proc)
    assert "key id" in line and "top secret" not in line


def test_decrypt_of_tampered_input_prints_nothing_and_one_line(conf: Path) -> None:
    sealed = Keyring(bytes.fromhex(KEY)).encrypt("top secret")
    for i in (15, len(sealed) - 1):
        tampered = sealed[:i] + ("A" if sealed[i] != "A" else "B") + sealed[i + 1 :]
        proc = run("decrypt", "--config", str(conf), stdin=tampered.encode())
        assert proc.returncode == 1 and proc.stdout == b""
        assert "top secret" not in one_error_line(proc)


def test_decrypt_of_garbage_and_missing_config(conf: Path, tmp_path: Path) -> None:
    proc = run("decrypt", "--config", str(conf), stdin=b"hello")
    assert proc.returncode == 1 and proc.stdout == b"" and one_error_line(proc)
    proc = run("decrypt", "--config", str(tmp_path / "nope.toml"), stdin=b"hello")
    assert proc.returncode == 1 and proc.stdout == b"" and "not found" in one_error_line(proc)


def test_usage_errors_exit_2(conf: Path) -> None:
    assert run("encrypt").returncode == 2
    assert run("rotate-key", "--config", str(conf)).returncode == 2
    proc = run("rotate-key", "--config", str(conf), "--new-key", "0123")
    assert proc.returncode == 2 and proc.stdout == b"" and "0123" not in proc.stderr.decode()
    assert tomllib.loads(conf.read_text())["encryption"]["key"] == KEY


def test_encrypt_generates_an_absent_key(tmp_path: Path) -> None:
    path = tmp_path / "deployment.toml"
    path.write_text("# fresh\n")
    proc = run("encrypt", "--config", str(path), stdin=b"x")
    assert proc.returncode == 0 and "ALERT" in proc.stderr.decode()
    key = tomllib.loads(path.read_text())["encryption"]["key"]
    assert key not in proc.stderr.decode()
    assert Keyring(bytes.fromhex(key)).decrypt(proc.stdout.decode().strip()) == "x"


def test_rotate_key(conf: Path) -> None:
    sealed = Keyring(bytes.fromhex(KEY)).encrypt("backend-pw")
    conf.write_text(conf.read_text() + f'\n[secrets]\npw = "{sealed}"  # backend\n')
    new = generate_key()
    proc = run("rotate-key", "--config", str(conf), "--new-key", new)
    assert proc.returncode == 0, proc.stderr
    assert b"1 value" in proc.stdout and b"backup" in proc.stdout
    doc = tomllib.loads(conf.read_text())
    assert doc["encryption"]["key"] == new and "# backend" in conf.read_text()
    assert Keyring(bytes.fromhex(new)).decrypt(doc["secrets"]["pw"]) == "backend-pw"
    dec = run("decrypt", "--config", str(conf), stdin=doc["secrets"]["pw"].encode())
    assert dec.stdout == b"backend-pw\n"


def test_rotate_key_reads_the_new_key_from_stdin_and_refuses_bad_values(conf: Path) -> None:
    conf.write_text(conf.read_text() + f'\n[secrets]\npw = "{Keyring(bytes.fromhex(generate_key())).encrypt("x")}"\n')
    before = conf.read_bytes()
    proc = run("rotate-key", "--config", str(conf), "--new-key", "-", stdin=(generate_key() + "\n").encode())
    assert proc.returncode == 1 and proc.stdout == b""
    assert "secrets.pw" in one_error_line(proc)
    assert conf.read_bytes() == before and sorted(p.name for p in conf.parent.iterdir()) == ["deployment.toml"]

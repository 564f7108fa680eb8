from __future__ import annotations

import logging
import os
import re
import threading
import tomllib
from pathlib import Path

import pytest

from asgi_apim import load_secrets
from asgi_apim.config import load_config
from asgi_apim.errors import ConfigError, CryptoError
from asgi_apim.secrets import EncryptionConfig, Keyring, decryptor_for, generate_key, load_keyring, parse_key
from asgi_apim.secrets.keys import ensure_key

KEY = generate_key()
OLD = generate_key()


def write(tmp_path: Path, text: str, name: str = "deployment.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def seal(plaintext: str, key: str = KEY) -> str:
    return Keyring(bytes.fromhex(key)).encrypt(plaintext)


def test_keygen_is_64_lowercase_hex_and_random() -> None:
    keys = {generate_key() for _ in range(50)}
    assert len(keys) == 50
    assert all(re.fullmatch(r"[0-9a-f]{64}", k) for k in keys)


@pytest.mark.parametrize(
    "bad", ["", "abc", KEY[:-1], KEY + "0", "g" * 64, KEY[:32] + " " + KEY[33:], "0x" + KEY[2:], seal("x")]
)
def test_bad_keys_are_refused_without_echoing_them(bad: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_key(bad, "encryption.key")
    assert info.value.key == "encryption.key"
    assert "64 hexadecimal" in str(info.value)
    if len(bad) > 3:
        assert bad not in str(info.value)


def test_upper_case_key_is_the_same_key() -> None:
    assert parse_key(KEY.upper()) == parse_key(KEY) == bytes.fromhex(KEY)


def test_decryptor_names_the_key_path_never_the_content() -> None:
    decrypt = decryptor_for(EncryptionConfig(key=KEY, old_keys=(OLD,)))
    assert decrypt(seal("v1"), "secrets.a") == "v1"
    assert decrypt(seal("v0", OLD), "secrets.a") == "v0"
    stranger = seal("hunter2", generate_key())
    with pytest.raises(ConfigError) as info:
        decrypt(stranger, "apis[0].backend_security.password")
    assert info.value.key == "apis[0].backend_security.password"
    assert "hunter2" not in str(info.value) and stranger not in str(info.value)


def test_bad_old_key_is_named() -> None:
    with pytest.raises(ConfigError) as info:
        decryptor_for(EncryptionConfig(key=KEY, old_keys=(OLD, "nope")))
    assert info.value.key == "encryption.old_keys[1]"


FULL = """\
[encryption]
key = "{key}"
old_keys = [{old}]

[secrets]
truststore_pass = "{ts}"
plain_one = "not encrypted"

[mutual_ssl]
truststore_password = "$secret{{truststore_pass}}"

[[key_managers]]
name = "idp"
issuer = "https://idp.example"
shared_secret = "{direct}"
algorithms = ["HS256"]

[[apis]]
name = "pets"
context = "/pets"
backend = "http://127.0.0.1:9000"

[apis.backend_security]
type = "basic"
username = "svc"
password = "{pw}"
"""


def full(tmp_path: Path, *, key: str = KEY, old: str = "", **values: str) -> Path:
    v = {
        "ts": seal("changeit"),
        "direct": seal("a-shared-hmac-secret-of-32-bytes-or-more"),
        "pw": seal("backend-pw"),
    } | values
    return write(tmp_path, FULL.format(key=key, old=old, **v))


def test_config_decrypts_secrets_references_and_direct_ciphertexts(tmp_path: Path) -> None:
    cfg = load_config(full(tmp_path, pw=seal("old-pw", OLD), old=f'"{OLD}"'))
    assert dict(cfg.secrets) == {"truststore_pass": "changeit", "plain_one": "not encrypted"}
    assert cfg.mutual_ssl.truststore_password == "changeit"
    assert cfg.key_managers[0].shared_secret == "a-shared-hmac-secret-of-32-bytes-or-more"
    assert cfg.api("pets").backend_security.password == "old-pw"
    text = repr(cfg)
    for plaintext in ("changeit", "a-shared-hmac-secret-of-32-bytes-or-more", "old-pw", KEY, OLD):
        assert plaintext not in text


def test_key_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_APIM_KEY", KEY)
    path = full(tmp_path, key="$env{TEST_APIM_KEY}")
    before = path.read_bytes()
    assert load_config(path).mutual_ssl.truststore_password == "changeit"
    assert path.read_bytes() == before
    monkeypatch.delenv("TEST_APIM_KEY")
    with pytest.raises(ConfigError, match="TEST_APIM_KEY") as info:
        load_config(path)
    assert info.value.key == "encryption.key"


def test_value_that_does_not_decrypt_stops_loading_naming_its_path(tmp_path: Path) -> None:
    other = seal("backend-pw", generate_key())
    with pytest.raises(ConfigError) as info:
        load_config(full(tmp_path, pw=other))
    assert info.value.key == "apis[0].backend_security.password"
    assert "backend-pw" not in str(info.value) and other not in str(info.value)


def test_tampered_secret_stops_loading(tmp_path: Path) -> None:
    good = seal("changeit")
    tampered = good[:-3] + ("A" if good[-3] != "A" else "B") + good[-2:]
    with pytest.raises(ConfigError) as info:
        load_config(full(tmp_path, ts=tampered))
    assert info.value.key == "secrets.truststore_pass"


def test_malformed_key_stops_loading(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(full(tmp_path, key="0123"))
    assert info.value.key == "encryption.key" and "0123" not in str(info.value)


def test_ciphertext_without_a_key_is_refused(tmp_path: Path) -> None:
    from asgi_apim.config import parse_config

    with pytest.raises(ConfigError) as info:
        parse_config({"secrets": {"a": seal("x")}}, base=tmp_path)
    assert info.value.key == "secrets.a"


COMMENTED = """\
# Gateway of the pets team.  Keep this header.
public_paths = ["/health"]   # no credentials here

[secrets]
# a comment inside [secrets]
plain = 'literal value'

[[apis]]   # the one API
name = "pets"
context = "/pets"

[apis.security]
mutual_ssl = "disabled"
application = ["basic"]
"""


def test_absent_key_is_generated_written_alerted_and_kept(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write(tmp_path, COMMENTED)
    with caplog.at_level(logging.WARNING, logger="asgi_apim.secrets"):
        cfg = load_config(path)
    text = path.read_text()
    assert text.startswith(COMMENTED)
    key = tomllib.loads(text)["encryption"]["key"]
    assert re.fullmatch(r"[0-9a-f]{64}", key) and cfg.encryption.key == key
    alerts = [r for r in caplog.records if "ALERT" in r.getMessage()]
    assert len(alerts) == 1 and str(path) in alerts[0].getMessage()
    assert key not in caplog.text
    assert [p.name for p in tmp_path.iterdir()] == ["deployment.toml"]

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="asgi_apim.secrets"):
        again = load_config(path)
    assert again.encryption.key == key and path.read_text() == text
    assert "ALERT" not in caplog.text


def test_absent_key_inside_an_existing_encryption_table(tmp_path: Path) -> None:
    path = write(tmp_path, f'[encryption]   # keys\nold_keys = ["{OLD}"]\n\n[secrets]\na = "{seal("x", OLD)}"\n')
    cfg = load_config(path)
    doc = tomllib.loads(path.read_text())
    assert doc["encryption"]["old_keys"] == [OLD] and doc["encryption"]["key"] == cfg.encryption.key != OLD
    assert cfg.secrets["a"] == "x"
    assert "[encryption]   # keys" in path.read_text()


def test_generation_keeps_file_permissions(tmp_path: Path) -> None:
    path = write(tmp_path, COMMENTED)
    path.chmod(0o600)
    load_config(path)
    assert path.stat().st_mode & 0o777 == 0o600


def test_workers_starting_together_agree_on_one_key(tmp_path: Path) -> None:
    path = write(tmp_path, COMMENTED)
    keys: list[str] = []
    barrier = threading.Barrier(8)

    def start() -> None:
        barrier.wait()
        keys.append(ensure_key(path)["encryption"]["key"])

    threads = [threading.Thread(target=start) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(keys) == 8 and len(set(keys)) == 1
    assert tomllib.loads(path.read_text())["encryption"]["key"] == keys[0]


def test_unwritable_file_without_key_is_a_config_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    import asgi_apim.secrets.keys as keys

    def read_only(path: Path, data: bytes) -> None:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(keys, "atomic_write", read_only)
    path = write(tmp_path, COMMENTED)
    with pytest.raises(ConfigError, match="could not be written") as info:
        load_config(path)
    assert info.value.key == "encryption.key"
    assert path.read_text() == COMMENTED


def test_load_keyring_reads_only_encryption(tmp_path: Path) -> None:
    path = write(tmp_path, f'[encryption]\nkey = "{KEY}"\n\n[whatever_another_issue_adds]\nx = 1\n')
    ring = load_keyring(path)
    assert ring.decrypt(seal("v")) == "v"
    with pytest.raises(CryptoError):
        ring.decrypt(seal("v", OLD))


def test_load_secrets_for_the_application(tmp_path: Path) -> None:
    path = full(tmp_path)
    secrets = load_secrets(path)
    assert secrets["truststore_pass"] == "changeit"
    assert "changeit" not in repr(secrets)
    assert load_secrets(load_config(path)) == secrets


def test_a_broken_file_without_key_is_reported_not_rewritten(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    broken = COMMENTED.replace('mutual_ssl = "disabled"', 'mutual_ssl = "sometimes"')
    path = write(tmp_path, broken)
    with caplog.at_level(logging.WARNING, logger="asgi_apim.secrets"), pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.key == "apis[0].security.mutual_ssl"
    assert path.read_text() == broken and "ALERT" not in caplog.text


def test_ciphertexts_without_a_key_are_not_given_a_useless_new_key(tmp_path: Path) -> None:
    text = f'[secrets]\na = "{seal("x")}"\n'
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match="does not decrypt") as info:
        load_config(path)
    assert info.value.key == "secrets.a" and path.read_text() == text

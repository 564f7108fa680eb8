"""A value that came encrypted never appears in an error: a bad one is named by its key alone."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from asgi_apim import errors, protect
from asgi_apim.config import load_config
from asgi_apim.errors import CONCEALED, ConfigError, TruststoreError, concealed, decrypted
from asgi_apim.secrets import Keyring

KEY = "5e" * 32


def seal(plaintext: str) -> str:
    return Keyring(bytes.fromhex(KEY)).encrypt(plaintext)


def config(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "deployment.toml"
    path.write_text(f'[encryption]\nkey = "{KEY}"\n' + body)
    return path


API = '[[apis]]\nname = "pets"\ncontext = "/pets"\n[apis.security]\nmutual_ssl = "mandatory"\n'


@pytest.mark.parametrize(
    "body, key",
    [
        ('[mutual_ssl]\nheader_format = "{v}"\n', "mutual_ssl.header_format"),
        ('[mutual_ssl]\ntrusted_proxies = ["{v}"]\n', "mutual_ssl.trusted_proxies"),
        (
            API + '[[apis.certificates]]\nalias = "a"\ncertificate = "ca.pem"\ntier = "{v}"\n',
            "apis[pets].certificates[a].tier",
        ),
        ('[secrets]\nx = "{v}"\n[mutual_ssl]\nheader_format = "$secret{{x}}"\n', "mutual_ssl.header_format"),
    ],
)
def test_a_bad_value_that_came_encrypted_is_named_by_its_key_alone(tmp_path: Path, body: str, key: str) -> None:
    plaintext = "SECRET-VALUE-not-for-logs"
    with pytest.raises(ConfigError) as info:
        load_config(config(tmp_path, body.format(v=seal(plaintext))))
    assert info.value.key == key
    assert plaintext not in str(info.value) and CONCEALED in str(info.value)


def test_a_plain_secrets_entry_is_concealed_too(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(
            config(tmp_path, '[secrets]\nx = "PLAIN-SECRET-entry"\n[mutual_ssl]\nheader_format = "$secret{x}"\n')
        )
    assert "PLAIN-SECRET-entry" not in str(info.value)


def test_a_truststore_path_that_came_encrypted_is_not_shown(tmp_path: Path) -> None:
    path = config(tmp_path, f'[mutual_ssl]\ntruststore = ["{seal("hidden-dir/SECRET-PATH.pem")}"]\n' + API)
    with pytest.raises(TruststoreError) as info:
        protect(lambda scope, receive, send: None, path)
    assert "SECRET-PATH" not in str(info.value)


def test_the_cli_shows_no_decrypted_value(tmp_path: Path) -> None:
    path = config(tmp_path, f'[mutual_ssl]\ntrusted_proxies = ["{seal("SECRET-PROXY-name")}"]\n')
    (tmp_path / "c.pem").write_text("")
    out = subprocess.run(
        [sys.executable, "-m", "asgi_apim.cli", "check", "--config", str(path), str(tmp_path / "c.pem")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1
    assert "SECRET-PROXY-name" not in out.stderr + out.stdout and "mutual_ssl.trusted_proxies" in out.stderr


def test_concealing_is_one_pass_and_leaves_short_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(errors, "_DECRYPTED", set())  # this test's values only, and none left for the next test
    monkeypatch.setattr(errors, "_pattern", None)
    decrypted("value")  # inside the marker's own text: not replaced again
    decrypted("abc")  # too short to be a secret worth the name: every "abc" would go
    assert concealed("a value, abc") == f"a {CONCEALED}, abc"


def test_loading_a_configuration_forgets_the_values_of_the_one_before(tmp_path: Path) -> None:
    load_config(config(tmp_path, f'[secrets]\nx = "{seal("FIRST-CONFIG-secret")}"\n'))
    assert concealed("FIRST-CONFIG-secret") == CONCEALED
    (tmp_path / "second").mkdir()
    load_config(config(tmp_path / "second", '[secrets]\ny = "plain-second-secret"\n'))
    assert concealed("FIRST-CONFIG-secret plain-second-secret") == f"FIRST-CONFIG-secret {CONCEALED}"

"""``asgi-apim rotate-key`` re-encrypts the ciphertexts of the API definitions too, in place."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from asgi_apim.config import load_config
from asgi_apim.errors import CryptoError
from asgi_apim.secrets import Keyring
from asgi_apim.secrets.rotate import rotate_key
from tests.definitions.conftest import HERE, write_setup

OLD = "cd" * 32  # write_setup's key
NEW = "ef" * 32


def _definition(tmp_path: Path, password: str) -> Path:
    doc = yaml.safe_load((HERE / "petstore.yaml").read_text())
    doc["x-wso2-endpoints"][0]["petstoreProduction"]["securityConfig"]["password"] = password
    text = "# a comment that stays\n" + yaml.safe_dump(doc, sort_keys=False)
    path = tmp_path / "petstore.yaml"
    path.write_text(text)
    return path


def test_a_definitions_password_is_sealed_under_the_new_key(tmp_path: Path) -> None:
    sealed = Keyring(bytes.fromhex(OLD)).encrypt("backend-password")
    definition = _definition(tmp_path, sealed)
    before = definition.read_text()
    config = write_setup(tmp_path, '[[apis]]\ndefinition = "petstore.yaml"\n')
    rotate_key(config, NEW)
    after = definition.read_text()
    assert sealed not in after and after.startswith("# a comment that stays\n")
    assert after.replace(after.split("password: ")[1].split("\n")[0], "X") == before.replace(sealed, "X")
    cfg = load_config(config)
    assert cfg.apis[0].backend_security is not None
    assert cfg.apis[0].backend_security.password == "backend-password"
    assert list(tmp_path.glob("petstore.yaml.*.bak"))  # the old definition kept


def test_a_ciphertext_that_does_not_open_changes_nothing(tmp_path: Path) -> None:
    foreign = Keyring(bytes.fromhex("01" * 32)).encrypt("backend-password")
    definition = _definition(tmp_path, foreign)
    before = definition.read_bytes()
    config = write_setup(tmp_path, "")
    config.write_text(config.read_text() + '[[apis]]\ndefinition = "petstore.yaml"\n')
    config_before = config.read_bytes()
    with pytest.raises(CryptoError, match="nothing changed: .*petstore.yaml"):
        rotate_key(config, NEW)
    assert definition.read_bytes() == before and config.read_bytes() == config_before

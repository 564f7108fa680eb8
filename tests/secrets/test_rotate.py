from __future__ import annotations

import json
import os
import re
import stat
import tempfile
import tomllib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import asgi_apim.secrets.rotate as rotate
from asgi_apim.config import load_config
from asgi_apim.errors import ConfigError, CryptoError
from asgi_apim.secrets import Envelope, Keyring, generate_key, is_ciphertext, key_id, load_keyring
from asgi_apim.secrets.rotate import STEPS, Rotation, rotate_key

OLD = generate_key()
NEW = generate_key()
ANCIENT = generate_key()

PLAIN = {
    "truststore": "changeit",
    "hmac": "a-shared-hmac-secret-of-32-bytes-or-more",
    "backend": "backend-pw",
    "revoked": "a-revoked-key-id",
    "legacy": "sealed-under-an-old-key",
    "literal": "in a literal string",
}


def seal(plaintext: str, key: str = OLD) -> str:
    return Keyring(bytes.fromhex(key)).encrypt(plaintext)


def config_text(key: str = OLD, **override: str) -> str:
    v = {name: seal(p) for name, p in PLAIN.items()} | {"legacy": seal(PLAIN["legacy"], ANCIENT)} | override
    return f"""\
# deployment.toml of the pets team -- comments and layout must survive a rotation
public_paths = ["/health"]

[encryption]
key = "{key}"          # the shared key
old_keys = ["{ANCIENT}"]

[secrets]  # named secrets
truststore_pass = "{v["truststore"]}"
legacy = "{v["legacy"]}"
quoted = '{v["literal"]}'   # a literal string stays literal
clear = "not encrypted"

[mutual_ssl]
truststore_password = "$secret{{truststore_pass}}"

[api_keys]
revoked = ["plain-id", "{v["revoked"]}"]

[[key_managers]]
name = "idp"
issuer = "https://idp.example"
shared_secret = "{v["hmac"]}"   # direct ciphertext
algorithms = ["HS256"]

[[apis]]
name = "pets"
context = "/pets"
backend = "http://127.0.0.1:9000"
backend_security = {{ type = "basic", username = "svc", password = "{v["backend"]}" }}
"""


def values_of(path: Path) -> dict[str, str]:
    cfg = load_config(path)
    return {
        "truststore": cfg.mutual_ssl.truststore_password,
        "hmac": cfg.key_managers[0].shared_secret,
        "backend": cfg.api("pets").backend_security.password,
        "revoked": cfg.api_keys.revoked[1],
        "legacy": cfg.secrets["legacy"],
        "literal": cfg.secrets["quoted"],
    }


def ciphertexts(text: str) -> list[str]:
    return re.findall(r"aesgcm:v1:[^\"']+", text)


def masked(text: str) -> str:
    return re.sub(r"[0-9a-f]{64}", "KEY", re.sub(r"aesgcm:v1:[^\"']+", "CT", text))


@pytest.fixture
def conf(tmp_path: Path) -> Path:
    path = tmp_path / "deployment.toml"
    path.write_text(config_text())
    return path


def listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_rotation_re_encrypts_everything_and_keeps_the_layout(conf: Path) -> None:
    original = conf.read_bytes()
    assert values_of(conf) == PLAIN
    result = rotate_key(conf, NEW)
    text = conf.read_text()
    assert result.values == 6 and result.notices == ()
    assert result.backup.read_bytes() == original and result.backup.parent == conf.parent
    assert listing(conf.parent) == sorted([conf.name, result.backup.name])
    assert tomllib.loads(text)["encryption"] == {"key": NEW, "old_keys": [ANCIENT]}
    assert masked(text) == masked(original.decode())
    assert len(ciphertexts(text)) == 6 and all(
        Envelope.parse(c).kid == key_id(bytes.fromhex(NEW)) for c in ciphertexts(text)
    )
    assert not set(ciphertexts(text)) & set(ciphertexts(original.decode()))
    assert "quoted = 'aesgcm:v1:" in text and "# a literal string stays literal" in text
    assert values_of(conf) == PLAIN
    with pytest.raises(CryptoError):
        Keyring(bytes.fromhex(OLD), [bytes.fromhex(ANCIENT)]).decrypt(ciphertexts(text)[0])


def test_keep_old_key_lists_the_previous_key(conf: Path) -> None:
    rotate_key(conf, NEW, keep_old_key=True)
    assert tomllib.loads(conf.read_text())["encryption"] == {"key": NEW, "old_keys": [ANCIENT, OLD]}
    assert values_of(conf) == PLAIN


@pytest.mark.parametrize("field", ["backend", "legacy", "revoked"])
def test_one_bad_value_leaves_the_file_byte_identical(tmp_path: Path, field: str) -> None:
    conf = tmp_path / "deployment.toml"
    conf.write_text(config_text(**{field: seal("x", generate_key())}))
    original = conf.read_bytes()
    with pytest.raises(CryptoError, match="nothing changed"):
        rotate_key(conf, NEW)
    assert conf.read_bytes() == original and listing(tmp_path) == ["deployment.toml"]


def test_a_tampered_value_leaves_the_file_byte_identical(tmp_path: Path) -> None:
    good = seal(PLAIN["hmac"])
    conf = tmp_path / "deployment.toml"
    conf.write_text(config_text(hmac=good[:20] + ("0" if good[20] != "0" else "1") + good[21:]))
    original = conf.read_bytes()
    with pytest.raises(CryptoError) as info:
        rotate_key(conf, NEW)
    assert "key_managers[0].shared_secret" in str(info.value) and PLAIN["hmac"] not in str(info.value)
    assert conf.read_bytes() == original and listing(tmp_path) == ["deployment.toml"]


@pytest.mark.parametrize("bad", ["", "xyz", NEW[:-2]])
def test_a_bad_new_key_changes_nothing(conf: Path, bad: str) -> None:
    original = conf.read_bytes()
    with pytest.raises(ConfigError):
        rotate_key(conf, bad)
    assert conf.read_bytes() == original and listing(conf.parent) == ["deployment.toml"]


def test_permissions_are_kept_for_file_and_backup(conf: Path) -> None:
    conf.chmod(0o600)
    result = rotate_key(conf, NEW)
    assert stat.S_IMODE(conf.stat().st_mode) == 0o600 and stat.S_IMODE(result.backup.stat().st_mode) == 0o600


def test_env_key_is_left_in_place_and_the_operator_told(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_ROTATE_KEY", OLD)
    conf = tmp_path / "deployment.toml"
    conf.write_text(config_text(key="$env{TEST_ROTATE_KEY}"))
    result = rotate_key(conf, NEW, keep_old_key=True)
    assert tomllib.loads(conf.read_text())["encryption"] == {"key": "$env{TEST_ROTATE_KEY}", "old_keys": [ANCIENT]}
    assert OLD not in conf.read_text() and NEW not in conf.read_text()
    assert any("TEST_ROTATE_KEY" in n for n in result.notices)
    with pytest.raises(ConfigError):
        load_config(conf)
    monkeypatch.setenv("TEST_ROTATE_KEY", NEW)
    assert values_of(conf) == PLAIN


def test_a_ciphertext_held_in_the_environment_is_reported(conf: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_ROTATE_VALUE", seal("from-env"))
    conf.write_text(conf.read_text().replace('clear = "not encrypted"', 'clear = "$env{TEST_ROTATE_VALUE}"'))
    result = rotate_key(conf, NEW)
    assert any("secrets.clear" in n for n in result.notices)


def test_rotating_a_file_without_a_key_sets_it(tmp_path: Path) -> None:
    conf = tmp_path / "deployment.toml"
    conf.write_text("# nothing encrypted yet\n[secrets]\nclear = 'x'\n")
    rotate_key(conf, NEW)
    assert load_keyring(conf).current.kid == key_id(bytes.fromhex(NEW))
    assert conf.read_text().startswith("# nothing encrypted yet\n[secrets]\nclear = 'x'\n")


class _Killed(BaseException):
    pass


@pytest.mark.parametrize("step", STEPS)
def test_rotation_interrupted_at_each_step_leaves_old_or_new_whole(
    conf: Path, monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    original = conf.read_bytes()

    def checkpoint(name: str) -> None:
        if name == step:
            raise _Killed(name)

    monkeypatch.setattr(rotate, "_checkpoint", checkpoint)
    with pytest.raises(_Killed):
        rotate_key(conf, NEW)
    assert values_of(conf) == PLAIN
    kid = key_id(bytes.fromhex(NEW))
    if step == "replaced":
        assert all(Envelope.parse(c).kid == kid for c in ciphertexts(conf.read_text()))
    else:
        assert conf.read_bytes() == original
    assert not [n for n in listing(conf.parent) if n.endswith(".tmp")]


class FileOwner:
    """A stand-in for the certificate registry: encrypted values in a JSON file."""

    name = "test-store"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.events: list[str] = []

    def prepare(self, rotation: Rotation) -> FileOwner:
        assert rotation.old is not None
        values = json.loads(self.path.read_text())
        self.pending = {k: rotation.new.encrypt(rotation.old.decrypt(v, b"store"), b"store") for k, v in values.items()}
        self.events.append("prepare")
        return self

    def commit(self) -> None:
        temp = self.path.with_name("store.json.new")
        temp.write_text(json.dumps(self.pending))
        os.replace(temp, self.path)
        self.events.append("commit")

    def abort(self) -> None:
        self.events.append("abort")


def make_store(directory: Path) -> FileOwner:
    store = directory / "store.json"
    ring = Keyring(bytes.fromhex(OLD))
    store.write_text(json.dumps({"partner-a": ring.encrypt("registry-secret", b"store")}))
    return FileOwner(store)


def store_values(conf: Path, store: Path) -> dict[str, str]:
    ring = load_keyring(conf)
    return {k: ring.decrypt(v, b"store") for k, v in json.loads(store.read_text()).items()}


def test_secret_owners_join_the_transaction(conf: Path) -> None:
    owner = make_store(conf.parent)
    rotate_key(conf, NEW, owners=[owner])
    assert owner.events == ["prepare", "commit"]
    assert store_values(conf, owner.path) == {"partner-a": "registry-secret"}
    assert tomllib.loads(conf.read_text())["encryption"]["old_keys"] == [ANCIENT]
    assert values_of(conf) == PLAIN


def test_a_failing_owner_changes_nothing_and_aborts_the_others(conf: Path) -> None:
    good = make_store(conf.parent)

    class Broken:
        name = "broken"

        def prepare(self, rotation: Rotation) -> FileOwner:
            raise CryptoError("registry value partner-b does not decrypt")

    original, store_before = conf.read_bytes(), good.path.read_bytes()
    with pytest.raises(CryptoError, match="partner-b"):
        rotate_key(conf, NEW, owners=[good, Broken()])
    assert good.events == ["prepare", "abort"]
    assert conf.read_bytes() == original and good.path.read_bytes() == store_before


def _killed_child(conf: Path, step: str, with_owner: bool, keep_old_key: bool = False) -> int:
    pid = os.fork()
    if pid == 0:  # the child dies at ``step`` without running any cleanup, like kill -9
        try:
            rotate._checkpoint = lambda name: os._exit(9) if name == step else None  # type: ignore[assignment]
            rotate_key(
                conf,
                NEW,
                owners=[FileOwner(conf.parent / "store.json")] if with_owner else [],
                keep_old_key=keep_old_key,
            )
        finally:
            os._exit(0)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


@pytest.mark.parametrize("keep_old_key", [False, True], ids=["drop-old", "keep-old"])
@pytest.mark.parametrize("with_owner", [False, True], ids=["config-only", "with-owner"])
@pytest.mark.parametrize("step", STEPS)
def test_rotation_killed_at_each_step_leaves_everything_readable(
    conf: Path, step: str, with_owner: bool, keep_old_key: bool
) -> None:
    if with_owner:
        make_store(conf.parent)
    assert _killed_child(conf, step, with_owner, keep_old_key) == 9
    assert values_of(conf) == PLAIN
    if with_owner:
        assert store_values(conf, conf.parent / "store.json") == {"partner-a": "registry-secret"}
    # and the operator can simply run it again
    rotate_key(conf, NEW, owners=[FileOwner(conf.parent / "store.json")] if with_owner else [])
    assert values_of(conf) == PLAIN
    assert all(Envelope.parse(c).kid == key_id(bytes.fromhex(NEW)) for c in ciphertexts(conf.read_text()))


@settings(max_examples=25, deadline=None)
@given(st.dictionaries(st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True), st.text(min_size=1), max_size=6))
def test_rotation_round_trips_any_secrets(secrets: dict[str, str]) -> None:
    with tempfile.TemporaryDirectory() as d:
        conf = Path(d) / "deployment.toml"
        lines = [f'[encryption]\nkey = "{OLD}"\n\n[secrets]']
        lines += [f'{name} = "{seal(value)}"' for name, value in secrets.items()]
        conf.write_text("\n".join(lines) + "\n")
        before = dict(load_config(conf).secrets)
        assert rotate_key(conf, NEW).values == len(secrets)
        after = load_config(conf).secrets
        assert dict(after) == before == secrets
        assert all(is_ciphertext(v) for v in tomllib.loads(conf.read_text())["secrets"].values())


def test_owners_are_aborted_when_the_configuration_fails_to_verify(conf: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    owner = make_store(conf.parent)
    original, store_before = conf.read_bytes(), owner.path.read_bytes()

    def refuse(*args: object) -> None:
        raise CryptoError("nothing changed: did not read back")

    monkeypatch.setattr(rotate, "_verify", refuse)
    with pytest.raises(CryptoError):
        rotate_key(conf, NEW, owners=[owner])
    assert owner.events == ["prepare", "abort"]
    assert conf.read_bytes() == original and owner.path.read_bytes() == store_before
    assert listing(conf.parent) == ["deployment.toml", "store.json"]


def test_a_configuration_that_cannot_be_replaced_leaves_no_file_of_the_rotation(
    conf: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original, before = conf.read_bytes(), set(listing(conf.parent))
    real = rotate.replace

    def refuse(temp: Path, path: Path, **kw: object) -> None:  # an immutable file (chattr +i): the rename onto it fails
        if path == conf:
            raise PermissionError(1, "Operation not permitted", str(temp), None, str(path))
        real(temp, path, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(rotate, "replace", refuse)
    with pytest.raises(ConfigError, match="nothing changed"):
        rotate_key(conf, NEW)
    assert conf.read_bytes() == original
    assert set(listing(conf.parent)) == before  # neither the staged file (it holds the new key) nor a backup


def test_a_failure_after_the_rename_keeps_the_backup_and_never_says_nothing_changed(
    conf: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from asgi_apim.secrets import _files

    original = conf.read_bytes()
    real = _files.fsync_dir

    def failing(directory: Path) -> None:  # the directory's fsync, after the rename onto the configuration
        if conf.read_bytes() != original:
            raise OSError(5, "Input/output error")
        real(directory)

    monkeypatch.setattr(_files, "fsync_dir", failing)
    with pytest.raises(ConfigError) as info:
        rotate_key(conf, NEW)
    assert "nothing changed" not in str(info.value) and "the original is kept in" in str(info.value)
    assert conf.read_bytes() != original and values_of(conf) == PLAIN  # the new file, whole, under the new key
    backups = [n for n in listing(conf.parent) if n.endswith(".bak")]
    assert len(backups) == 1 and (conf.parent / backups[0]).read_bytes() == original

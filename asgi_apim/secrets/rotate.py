"""``rotate-key``: re-encrypt everything under a new key, all or nothing.

The rotation reads the configuration, decrypts every ciphertext it holds (in
``[secrets]``, in any table, inline table or array) under the current keyring,
re-encrypts each under the new key, verifies the result by reading it back,
and only then writes: the original is copied to a timestamped backup, the new
file is written to a temporary file, fsync'd and renamed over the original.
If any value fails, nothing is written. A rotation killed at any point leaves
the old file or the new file on disk, whole.

Other stores of encrypted values (the certificate registry) join the same
transaction as *secret owners*: each one prepares its re-encrypted values
without changing anything durable, and commits only once every owner and the
configuration have prepared. So that no owner's values are ever unreadable,
the configuration is first replaced by one that knows both keys (the previous
key in ``old_keys``), then the owners commit, then the previous key is dropped
(unless ``keep_old_key``).
"""

from __future__ import annotations

import datetime
import os
import re
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import tomlkit
from tomlkit.items import String, StringType

from asgi_apim._schema import read_toml
from asgi_apim.errors import ConfigError, CryptoError
from asgi_apim.secrets._files import locked, replace, write_temp
from asgi_apim.secrets.envelope import is_ciphertext
from asgi_apim.secrets.keys import Keyring, encryption_config, parse_key

Path_ = tuple[str | int, ...]
_ENV = re.compile(r"\$env\{([A-Za-z_][A-Za-z0-9_]*)\}")

STEPS = ("read", "decrypted", "prepared", "staged", "backed-up", "transitional", "owners-committed", "replaced")


def _checkpoint(step: str) -> None:
    """A boundary between two steps of a rotation; nothing happens here (tests interrupt here)."""


@dataclass(frozen=True)
class Rotation:
    """What a secret owner is given: the keyring to open with and the one to seal with."""

    old: Keyring | None
    new: Keyring
    config_path: Path


class PreparedChange(Protocol):
    def commit(self) -> None:
        """Make the prepared values durable. Called once, after every other party prepared."""

    def abort(self) -> None:
        """Forget the prepared values. Called if any other party failed."""


class SecretOwner(Protocol):
    """A store of encrypted values outside the configuration file (the certificate registry)."""

    name: str

    def prepare(self, rotation: Rotation) -> PreparedChange:
        """Decrypt everything with ``rotation.old``, re-encrypt with ``rotation.new``, verify; write nothing.

        Raise `asgi_apim.errors.APIMError` if any value fails.
        """


# Modules that may provide a ``secret_owner(config_path, raw) -> SecretOwner | None``.
SECRET_OWNER_PROVIDERS: tuple[str, ...] = ("asgi_apim.registry.rotation", "asgi_apim.secrets.definition_files")


def default_owners(config_path: Path, raw: Mapping[str, Any]) -> list[SecretOwner]:
    owners = []
    for module in SECRET_OWNER_PROVIDERS:
        try:
            mod = __import__(module, fromlist=["secret_owner"])
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
            continue
        owner = mod.secret_owner(config_path, raw)
        if owner is not None:
            owners.append(owner)
    return owners


@dataclass(frozen=True)
class RotationResult:
    values: int
    backup: Path
    notices: tuple[str, ...] = ()


def _strings(node: Any, path: Path_ = ()) -> Iterator[tuple[Path_, str]]:
    if isinstance(node, dict):
        for k, v in node.items():
            if path or k != "encryption":
                yield from _strings(v, (*path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _strings(v, (*path, i))
    elif isinstance(node, str):
        yield path, node


def _dotted(path: Path_) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else (f".{p}" if i else p) for i, p in enumerate(path))


def _open_all(raw: Mapping[str, Any], keyring: Keyring | None) -> tuple[dict[Path_, str], list[str]]:
    """Every ciphertext of ``raw`` by path, decrypted; and messages for those that do not decrypt."""
    plain: dict[Path_, str] = {}
    failures: list[str] = []
    for path, value in _strings(raw):
        if not is_ciphertext(value):
            continue
        if keyring is None:
            failures.append(f"{_dotted(path)}: is encrypted but no [encryption] key is configured")
            continue
        try:
            plain[path] = keyring.decrypt(value)
        except CryptoError as exc:
            failures.append(f"{_dotted(path)}: {exc}")
    return plain, failures


def _render(text: str, sealed: Mapping[Path_, str], key: str | None, old_keys: Sequence[str]) -> bytes:
    doc = tomlkit.parse(text)
    for path, value in sealed.items():
        node: Any = doc
        for p in path[:-1]:
            node = node[p]
        old = node[path[-1]]
        literal = isinstance(old, String) and old.type == StringType.SLL
        node[path[-1]] = tomlkit.string(value, literal=literal)
    if "encryption" not in doc:
        doc.add("encryption", tomlkit.table())
    enc: Any = doc["encryption"]
    if key is not None:
        enc["key"] = key
    if list(enc.get("old_keys", [])) != list(old_keys):
        enc["old_keys"] = list(old_keys)
    return tomlkit.dumps(doc).encode("utf-8")


def _opened(node: Any, plain: Mapping[Path_, str], path: Path_ = ()) -> Any:
    """``node`` with each ciphertext replaced by its plaintext, ``[encryption]`` left out."""
    if isinstance(node, dict):
        return {k: _opened(v, plain, (*path, k)) for k, v in node.items() if path or k != "encryption"}
    if isinstance(node, list):
        return [_opened(v, plain, (*path, i)) for i, v in enumerate(node)]
    return plain.get(path, node)


def _verify(data: bytes, raw: Mapping[str, Any], plain: Mapping[Path_, str], new: Keyring, key: str | None) -> None:
    """Read the rendered file back: the same document, every ciphertext opening under the new key."""
    fresh = tomllib.loads(data.decode("utf-8"))
    reopened, failures = _open_all(fresh, new)
    if failures or reopened != plain or _opened(fresh, reopened) != _opened(raw, plain):
        raise CryptoError("nothing changed: the re-encrypted configuration did not read back identically")
    if key is not None and encryption_config(fresh).key != key:
        raise CryptoError("nothing changed: the new key did not read back from [encryption] key")


def _backup_path(path: Path) -> Path:
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    candidate = path.with_name(f"{path.name}.{stamp}.bak")
    n = 1
    while candidate.exists():
        candidate = path.with_name(f"{path.name}.{stamp}-{n}.bak")
        n += 1
    return candidate


def _prepare(owners: Sequence[SecretOwner], rotation: Rotation) -> list[PreparedChange]:
    prepared: list[PreparedChange] = []
    try:
        for owner in owners:
            prepared.append(owner.prepare(rotation))
    except BaseException:
        for change in prepared:
            change.abort()
        raise
    return prepared


def _env_notices(raw: Mapping[str, Any]) -> list[str]:
    notices = []
    for p, value in _strings(raw):
        if "$env{" in value and is_ciphertext(_ENV.sub(lambda m: os.environ.get(m.group(1), ""), value)):
            notices.append(
                f"{_dotted(p)} is a ciphertext taken from the environment: "
                "replace it with `asgi-apim encrypt` output under the new key"
            )
    return notices


def _commit(path: Path, original: bytes, files: list[bytes], prepared: list[PreparedChange]) -> Path:
    """Backup, then the configuration knowing the new key (the final file, or with owners of
    their own values and the previous key to drop, a transitional one knowing both), then the
    owners, then (after a transitional one) the final file: each a durable, atomic step. A
    failure before the configuration is first replaced leaves no file of the rotation behind
    (no staged file, which holds the new key, and no backup) and says nothing changed."""
    staged = [write_temp(path, data, like=path) for data in files]
    backup: Path | None = None
    changed = False

    def renamed() -> None:
        nonlocal changed
        changed = True

    try:
        _checkpoint("staged")
        backup = _backup_path(path)
        copy = write_temp(backup, original, like=path)
        try:
            replace(copy, backup)
        finally:
            copy.unlink(missing_ok=True)  # gone once renamed: left only by a failed rename
        _checkpoint("backed-up")
        if prepared:  # the configuration knows the new key before any owner commits under it
            replace(staged[0], path, renamed=renamed)
            staged.pop(0)
        _checkpoint("transitional")
        while prepared:
            prepared[0].commit()
            prepared.pop(0)
        _checkpoint("owners-committed")
        if staged:
            replace(staged[0], path, renamed=renamed)
            staged.pop(0)
        _checkpoint("replaced")
    except BaseException as exc:
        if not changed:
            if backup is not None:
                backup.unlink(missing_ok=True)
            if isinstance(exc, OSError):
                raise ConfigError(
                    "", f"nothing changed: {path} could not be replaced ({exc.strerror or exc})"
                ) from None
        elif isinstance(exc, OSError):
            raise ConfigError(
                "",
                f"{path} was replaced and may hold the new key, but the rotation failed after it"
                f" ({exc.strerror or exc}); the original is kept in {backup}",
            ) from None
        raise
    finally:
        for temp in staged:
            temp.unlink(missing_ok=True)
    assert backup is not None
    return backup


def rotate_key(
    config_path: str | os.PathLike[str],
    new_key: str,
    *,
    keep_old_key: bool = False,
    owners: Sequence[SecretOwner] | None = None,
) -> RotationResult:
    """Re-encrypt every value ``config_path`` (and every secret owner) holds under ``new_key``."""
    path = Path(config_path).resolve()
    new = Keyring(parse_key(new_key, "--new-key"))
    new_hex = new_key.strip().lower()
    if not path.is_file():
        raise ConfigError("", f"configuration file {path} not found")
    with locked(path):
        original = path.read_bytes()
        raw = read_toml(path)
        encryption = encryption_config(raw)
        old = Keyring.from_config(encryption) if encryption.key is not None else None
        enc_raw = raw.get("encryption", {})
        from_env = _ENV.search(enc_raw["key"]) if isinstance(enc_raw.get("key"), str) else None
        notices = _env_notices(raw)
        _checkpoint("read")

        plain, failures = _open_all(raw, old)
        if failures:
            more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
            raise CryptoError(f"nothing changed: {failures[0]}{more}")
        sealed = {p: new.encrypt(v) for p, v in plain.items()}
        _checkpoint("decrypted")

        prepared = _prepare(default_owners(path, raw) if owners is None else owners, Rotation(old, new, path))
        _checkpoint("prepared")
        try:
            key = None if from_env else new_hex
            previous = encryption.key.strip().lower() if encryption.key and not from_env else None
            old_keys = list(enc_raw.get("old_keys", []))
            extra = [previous] if previous and previous != new_hex and previous not in old_keys else []
            files = [_render(original.decode("utf-8"), sealed, key, old_keys + (extra if keep_old_key else []))]
            if prepared and extra and not keep_old_key:
                files.insert(0, _render(original.decode("utf-8"), sealed, key, old_keys + extra))
            for data in files:
                _verify(data, raw, plain, new, key)
            backup = _commit(path, original, files, prepared)
        finally:
            for change in prepared:
                change.abort()
    if from_env:
        name = from_env.group(1)
        notices.insert(
            0, f"[encryption] key comes from $env{{{name}}}: set {name} to the new key before the next start"
        )
        if keep_old_key:
            notices.append("the previous key came from the environment and was not written to old_keys")
    return RotationResult(values=len(sealed), backup=backup, notices=tuple(notices))

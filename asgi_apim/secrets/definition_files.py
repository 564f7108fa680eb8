"""`asgi-apim rotate-key` and the API definitions: the ciphertexts an OpenAPI document holds (an
endpoint's ``securityConfig`` password) are re-encrypted under the new key with the rest.

Each ``[[apis]] definition`` file of the configuration is a secret owner: every ``aesgcm:v1``
envelope in its text is opened with the old keyring and sealed with the new one, replaced
where it stands (the document's formatting, comments and order unchanged), and the file is
replaced atomically once the configuration knows the new key, a backup kept beside it. A
ciphertext that does not open stops the rotation before anything is written.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from asgi_apim._schema import resolve_path
from asgi_apim.errors import CryptoError
from asgi_apim.secrets._files import replace, write_temp
from asgi_apim.secrets.rotate import PreparedChange, Rotation

_ENVELOPE = re.compile(r"aesgcm:v1:[0-9a-f]{16}:[A-Za-z0-9_-]+:[A-Za-z0-9_-]+")


def definition_paths(config_path: Path, raw: Mapping[str, Any]) -> list[Path]:
    """The definition files ``[[apis]]`` names, resolved as the configuration resolves them."""
    apis = raw.get("apis", [])
    found: list[Path] = []
    for api in apis if isinstance(apis, list) else []:
        value = api.get("definition") if isinstance(api, dict) else None
        if isinstance(value, str) and value.strip() and "$" not in value:
            path = resolve_path(config_path.parent, value).resolve()
            if path not in found:
                found.append(path)
    return found


@dataclass
class _Rewrite:
    path: Path
    data: bytes

    def commit(self) -> None:
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
        backup = self.path.with_name(f"{self.path.name}.{stamp}.bak")
        replace(write_temp(backup, self.path.read_bytes(), like=self.path), backup)
        replace(write_temp(self.path, self.data, like=self.path), self.path)

    def abort(self) -> None:
        return None


class _Rewrites:
    def __init__(self, rewrites: list[_Rewrite]) -> None:
        self.rewrites = rewrites

    def commit(self) -> None:
        for rewrite in self.rewrites:
            rewrite.commit()

    def abort(self) -> None:
        return None


@dataclass
class DefinitionFiles:
    """The definition files of one configuration, as a `SecretOwner`."""

    paths: list[Path]
    name: str = "API definitions"

    def prepare(self, rotation: Rotation) -> PreparedChange:
        rewrites = []
        for path in self.paths:
            try:
                text = path.read_text(encoding="utf-8")
            except OSError:
                continue  # a definition that cannot be read stops the next start-up, naming it
            if not _ENVELOPE.search(text):
                continue
            old = rotation.old
            if old is None:
                raise CryptoError(
                    f"nothing changed: {path} holds encrypted values but no [encryption] key is configured"
                )
            try:
                opened_before = [old.decrypt(m.group(0)) for m in _ENVELOPE.finditer(text)]
            except CryptoError as exc:
                raise CryptoError(f"nothing changed: {path}: {exc}") from None
            between = _ENVELOPE.split(text)  # the text around the envelopes, one more piece than envelopes
            sealed = [rotation.new.encrypt(value) for value in opened_before]
            rewritten = between[0] + "".join(new + rest for new, rest in zip(sealed, between[1:], strict=True))
            opened_after = [rotation.new.decrypt(m.group(0)) for m in _ENVELOPE.finditer(rewritten)]
            if opened_before != opened_after or _ENVELOPE.sub("", text) != _ENVELOPE.sub("", rewritten):
                raise CryptoError(f"nothing changed: {path} did not read back identically")
            rewrites.append(_Rewrite(path, rewritten.encode("utf-8")))
        return _Rewrites(rewrites)


def secret_owner(config_path: Path, raw: Mapping[str, Any]) -> DefinitionFiles | None:
    paths = definition_paths(config_path, raw)
    return DefinitionFiles(paths) if paths else None

"""Reading one OpenAPI (3.0, 3.1) or Swagger (2.0) document: YAML or JSON, validated, with
errors that name the file and the JSON pointer (RFC 6901) of what is wrong."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from openapi_spec_validator import validate

from asgi_apim.errors import ConfigError


def printable(text: str) -> str:
    """``text`` on one line: a character that is not printable (a newline in a key) escaped."""
    return text if text.isprintable() else "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def located(path: Path, where: str, message: str) -> ConfigError:
    """The one-line error of a definition: the file, ``#``, the JSON pointer, and why."""
    return ConfigError(printable(f"{path}#{where}"), printable(message))


def pointer(*parts: object) -> str:
    """The JSON pointer of ``parts`` (``~`` and ``/`` escaped as RFC 6901 says)."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts) or "/"


class Document:
    """A parsed and validated definition; `error` builds the one-line start-up error."""

    def __init__(self, path: Path, data: dict[str, Any]) -> None:
        self.path = path
        self.data = data
        self.swagger = "swagger" in data

    def error(self, where: str, message: str) -> ConfigError:
        return located(self.path, where, message)

    def resolve(self, value: Any, where: str) -> tuple[Any, str]:
        """``value`` with a local ``$ref`` (``#/...``) followed, and where it was found."""
        seen = set()
        while isinstance(value, Mapping) and "$ref" in value:
            ref = value["$ref"]
            if not isinstance(ref, str) or not ref.startswith("#/") or ref in seen:
                raise self.error(where + "/$ref", f"{ref!r} is not a reference within this document")
            seen.add(ref)
            value, where = self.lookup(ref, where + "/$ref"), ref[1:]
        return value, where

    def lookup(self, ref: str, where: str) -> Any:
        """What the local reference ``ref`` (``#/a/b``) points at; an error naming ``where`` if nothing."""
        node: Any = self.data
        for raw in ref[2:].split("/"):
            part = raw.replace("~1", "/").replace("~0", "~")
            if isinstance(node, Mapping) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                raise self.error(where, f"the reference {ref!r} does not resolve")
        return node


def _strings(value: Any) -> Any:
    """YAML's non-string keys (``200:``) as strings, as JSON would have them."""
    if isinstance(value, dict):
        return {str(k): _strings(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_strings(v) for v in value]
    return value


def _first_line(text: str) -> str:
    return " ".join(text.split())[:300]


def _where(path: Iterable[Any]) -> str:
    return pointer(*path)


def read_document(path: Path) -> Document:
    """The document at ``path``, parsed (JSON or YAML) and validated by openapi-spec-validator.
    Raises `ConfigError` naming the file and the JSON pointer of the first problem."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(printable(str(path)), f"cannot read the definition: {exc.strerror or exc}") from None
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise located(path, "/", f"is neither valid JSON nor YAML: {_first_line(str(exc))}") from None
    if not isinstance(data, dict):
        raise located(path, "/", "is not an OpenAPI document (an object with openapi or swagger)")
    data = _strings(data)
    if not isinstance(data.get("openapi", data.get("swagger")), str):
        raise located(path, "/", "names no openapi (3.0, 3.1) or swagger (2.0) version")
    try:
        validate(data)
    except Exception as exc:  # the validator's own tree (jsonschema errors, version detection, references)
        where = _where(getattr(exc, "absolute_path", ()) or ())
        message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
        raise located(path, where, f"invalid OpenAPI document: {_first_line(message)}") from None
    return Document(path, data)

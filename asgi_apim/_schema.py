"""The generic half of reading ``deployment.toml``: typed table getters and value resolution.

`Table` reads one TOML table with getters that name the offending key in the
`ConfigError` (``apis[0].security.mutual_ssl``), check the common kinds of
value (numbers, networks, header names, URL paths) and refuse keys nobody read.
`resolve_document` turns raw strings into their values: ``$env{NAME}``,
``$secret{NAME}`` and ciphertexts made by ``asgi-apim encrypt``.
`asgi_apim.config` builds the configuration objects on top of these.
"""

from __future__ import annotations

import builtins
import ipaddress
import math
import os
import re
import tomllib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal, overload
from urllib.parse import urlsplit

from asgi_apim.errors import ConfigError, decrypted, forget_decrypted

_ENV = re.compile(r"\$env\{([A-Za-z_][A-Za-z0-9_]*)\}")
_SECRET = re.compile(r"^\$secret\{([^}]+)\}$")
_TOKEN = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")  # RFC 9110 token: a header name
_HTTP_URL = re.compile(r"^https?://[^/]+")
_PATH_PARAM = re.compile(r"\{[A-Za-z_][A-Za-z0-9_]*(?::(?:str|path|int|float|uuid))?\}")  # Starlette's templates

Decrypt = Callable[[str, str], str]  # (ciphertext, key path) -> plaintext
CIPHERTEXT_PREFIX = "aesgcm:v1:"  # a value claiming to be an `asgi_apim.secrets` envelope: it decrypts, or is refused

PKCS12_SUFFIXES = (".p12", ".pfx")  # a certificate file read as PKCS#12 (truststores, SSL profiles)


class Secrets(Mapping[str, str]):
    """The decrypted ``[secrets]`` table. Its repr never shows a value."""

    def __init__(self, values: Mapping[str, str] | None = None) -> None:
        self._values = dict(values or {})

    def __getitem__(self, name: str) -> str:
        return self._values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"Secrets({sorted(self._values)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secrets) and other._values == self._values

    def __hash__(self) -> int:
        return hash(tuple(sorted(self._values)))


def expand_env(value: str, key: str) -> str:
    def env(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in os.environ:
            raise ConfigError(key, f"environment variable {name} is not set")
        return os.environ[name]

    return _ENV.sub(env, value)


class Resolver:
    """Turns raw TOML strings into their values: $env{}, $secret{}, ciphertexts."""

    def __init__(self, secrets: Mapping[str, str], decrypt: Decrypt | None) -> None:
        self.secrets = secrets
        self.decrypt = decrypt

    def __call__(self, value: Any, key: str) -> Any:
        if isinstance(value, dict):
            return {k: self(v, f"{key}.{k}") for k, v in value.items()}
        if isinstance(value, list):
            return [self(v, f"{key}[{i}]") for i, v in enumerate(value)]
        if not isinstance(value, str):
            return value
        match = _SECRET.match(value)
        if match:
            name = match.group(1)
            if name not in self.secrets:
                raise ConfigError(key, f"refers to $secret{{{name}}}, which [secrets] does not define")
            return self.secrets[name]
        value = expand_env(value, key)
        if value.startswith(CIPHERTEXT_PREFIX):
            if self.decrypt is None:
                raise ConfigError(key, "is encrypted but no [encryption] key is configured")
            return decrypted(self.decrypt(value, key))
        return value


def resolve_document(raw: Mapping[str, Any], decrypt: Decrypt | None) -> tuple[dict[str, Any], Secrets]:
    """Every value of a document resolved, but ``[encryption]`` and ``[secrets]``; and the decrypted secrets."""
    forget_decrypted()  # the values of this configuration, not of one loaded before it
    table = Table(raw.get("secrets", {}), "secrets", Path())
    bare = Resolver({}, decrypt)
    # every [secrets] entry is a secret, written encrypted or not: none appears in an error either
    plain = {name: decrypted(bare(table.str(name, required=True), f"secrets.{name}")) for name in list(table.raw)}
    table.done()
    resolve = Resolver(plain, decrypt)
    return {k: (v if k in ("encryption", "secrets") else resolve(v, k)) for k, v in raw.items()}, Secrets(plain)


_READ_KEYS: ContextVar[set[str] | None] = ContextVar("asgi_apim_read_keys", default=None)


@contextmanager
def recording_keys() -> Iterator[set[str]]:
    """Every dotted key a `Table` asks for while the block runs, present or not
    (``apis[0].security.mutual_ssl``): what the parser accepts, for the configuration
    reference's test."""
    keys: set[str] = set()
    token = _READ_KEYS.set(keys)
    try:
        yield keys
    finally:
        _READ_KEYS.reset(token)


class Table:
    """One TOML table being read: typed getters that name the key on error."""

    def __init__(self, raw: Any, key: str, base: Path) -> None:
        if not isinstance(raw, dict):
            raise ConfigError(key, "must be a table")
        self.raw = raw
        self.key = key
        self.base = base
        self.seen: set[str] = set()

    def _k(self, name: str) -> str:
        return f"{self.key}.{name}" if self.key else name

    def _get(self, name: str, default: Any) -> Any:
        self.seen.add(name)
        recording = _READ_KEYS.get()
        if recording is not None:
            recording.add(self._k(name))
        return self.raw.get(name, default)

    def value(self, name: builtins.str) -> Any:
        """The raw value of ``name`` (None when absent), for a key of more than one type."""
        return self._get(name, None)

    def has(self, name: str) -> bool:
        return name in self.raw

    @overload
    def str(
        self,
        name: builtins.str,
        default: builtins.str,
        *,
        choices: tuple[builtins.str, ...] = (),
        required: builtins.bool = False,
    ) -> builtins.str: ...
    @overload
    def str(
        self,
        name: builtins.str,
        default: None = None,
        *,
        choices: tuple[builtins.str, ...] = (),
        required: Literal[True],
    ) -> builtins.str: ...
    @overload
    def str(
        self,
        name: builtins.str,
        default: None = None,
        *,
        choices: tuple[builtins.str, ...] = (),
        required: builtins.bool = False,
    ) -> builtins.str | None: ...
    def str(
        self,
        name: builtins.str,
        default: builtins.str | None = None,
        *,
        choices: tuple[builtins.str, ...] = (),
        required: builtins.bool = False,
    ) -> builtins.str | None:
        value = self._get(name, default)
        if value is None:
            if required:
                raise ConfigError(self._k(name), "is required")
            return None
        if not isinstance(value, str):
            raise ConfigError(self._k(name), "must be a string")
        if required and not value:
            raise ConfigError(self._k(name), "must not be empty")
        if choices and value not in choices:
            raise ConfigError(self._k(name), f"must be one of {', '.join(choices)} (got {value!r})")
        return value

    def bool(self, name: builtins.str, default: builtins.bool) -> builtins.bool:
        value = self._get(name, default)
        if not isinstance(value, bool):
            raise ConfigError(self._k(name), "must be true or false")
        return value

    def number(self, name: builtins.str, default: float, *, minimum: float = 0, maximum: float = math.inf) -> float:
        value = self._get(name, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(self._k(name), f"must be a number >= {minimum}")
        if not math.isfinite(value):
            raise ConfigError(self._k(name), f"must be a finite number >= {minimum} (got {value})")
        if value < minimum:
            raise ConfigError(self._k(name), f"must be a number >= {minimum} (got {value})")
        if value > maximum:
            raise ConfigError(self._k(name), f"must be a number <= {maximum:g} (got {value})")
        return float(value)

    def integer(self, name: builtins.str, default: int, *, minimum: int = 0, maximum: int | None = None) -> int:
        value = self._get(name, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(self._k(name), f"must be a whole number >= {minimum}")
        if value < minimum:
            raise ConfigError(self._k(name), f"must be a whole number >= {minimum} (got {value})")
        if maximum is not None and value > maximum:
            raise ConfigError(self._k(name), f"must be a whole number <= {maximum} (got {value})")
        return value

    def strs(
        self, name: builtins.str, default: tuple[builtins.str, ...] = (), *, choices: tuple[builtins.str, ...] = ()
    ) -> tuple[builtins.str, ...]:
        value = self._get(name, default)
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise ConfigError(self._k(name), "must be a list of strings")
        for v in value:
            if choices and v not in choices:
                raise ConfigError(self._k(name), f"{v!r} is not one of {', '.join(choices)}")
        return tuple(value)

    def networks(self, name: builtins.str, default: tuple[builtins.str, ...]) -> tuple[builtins.str, ...]:
        values = self.strs(name, default)
        for v in values:
            try:
                ipaddress.ip_network(v, strict=False)
            except ValueError:
                raise ConfigError(self._k(name), f"{v!r} is not an IP address or CIDR network") from None
        return values

    def header_name(self, name: builtins.str, default: builtins.str) -> builtins.str:
        value: str = self.str(name, default, required=True)
        if not _TOKEN.fullmatch(value):
            raise ConfigError(self._k(name), "is not a valid HTTP header name")
        return value

    def http_url(self, name: builtins.str) -> builtins.str | None:
        value: str | None = self.str(name)
        if value is not None and not _HTTP_URL.match(value):
            raise ConfigError(self._k(name), "must be an http:// or https:// URL")
        if value is not None:
            try:
                urlsplit(value).port  # noqa: B018 - a port out of range, or not a number, raises here
            except ValueError:
                raise ConfigError(self._k(name), "has a port that is not a number from 0 to 65535") from None
        return value

    def path_prefix(self, name: builtins.str) -> builtins.str:
        """A required absolute URL path such as ``/pets``, without its trailing slash."""
        value: str = self.str(name, required=True)
        if not plain_path(value):
            raise ConfigError(
                self._k(name),
                f"{value!r} must be an absolute path such as /pets (no query, template,"
                " space or dot-segment: it could never be matched)",
            )
        return value.rstrip("/") or "/"

    def path_template(self, name: builtins.str) -> builtins.str:
        """A required Starlette path template such as ``/pets/{id:int}``."""
        value: str = self.str(name, required=True)
        if not value.startswith("/"):
            raise ConfigError(self._k(name), "must start with /")
        if set("{}") & set(_PATH_PARAM.sub("", value)):
            raise ConfigError(
                self._k(name), f"{value!r} is not a path template such as /pets/{{id}} or /pets/{{id:int}}"
            )
        params = re.findall(r"\{([A-Za-z_][A-Za-z0-9_]*)", value)
        if len(params) != len(set(params)):
            raise ConfigError(self._k(name), f"{value!r} names a path parameter twice")
        return value

    def database_url(self, name: builtins.str) -> builtins.str | None:
        """A database URL; a relative ``sqlite:///FILE`` is made absolute against the file's directory."""
        value: str | None = self.str(name)
        if value and value.startswith("sqlite:///") and not value.startswith("sqlite:////"):
            value = "sqlite:///" + str(resolve_path(self.base, value[len("sqlite:///") :]))
        return value

    @overload
    def path(self, name: builtins.str, *, required: Literal[True]) -> Path: ...
    @overload
    def path(self, name: builtins.str, *, required: builtins.bool = False) -> Path | None: ...
    def path(self, name: builtins.str, *, required: builtins.bool = False) -> Path | None:
        value = self.str(name, required=required)
        return None if value is None else self._file_path(self._k(name), value)

    def paths(self, name: builtins.str) -> tuple[Path, ...]:
        return tuple(self._file_path(f"{self._k(name)}[{i}]", v) for i, v in enumerate(self.strs(name)))

    def _file_path(self, key: builtins.str, value: builtins.str) -> Path:
        """A file path: never empty (it would name the configuration's own directory), no NUL."""
        if not value.strip():
            raise ConfigError(key, "is empty: give a file or directory path")
        if "\x00" in value:
            raise ConfigError(key, "contains a NUL character")
        return resolve_path(self.base, value)

    def table(self, name: builtins.str) -> Table:
        return Table(self._get(name, {}), self._k(name), self.base)

    def tables(self, name: builtins.str) -> list[Table]:
        value = self._get(name, [])
        if not isinstance(value, list):
            raise ConfigError(self._k(name), "must be an array of tables ([[...]])")
        return [Table(v, f"{self._k(name)}[{i}]", self.base) for i, v in enumerate(value)]

    def done(self) -> None:
        unknown = sorted(set(self.raw) - self.seen)
        if unknown:
            raise ConfigError(self._k(unknown[0]), "unknown key")


_SEPARATORS = re.compile(r"[/\\]")  # a backslash separates segments too, for some servers and backends


def dot_segments(path: str) -> bool:
    """Whether ``path`` has a ``.`` or ``..`` segment (``%2e`` included: the server decoded it;
    after a backslash, or with a ``;`` parameter as Tomcat reads ``..;``, too). The routes are
    decided on the path as written; an app or a backend that resolves these segments would serve
    another path than the one decided (``/health/../pets`` past a public path), so such a path
    is refused, as a proxy would have removed them."""
    return any(segment.partition(";")[0] in (".", "..") for segment in _SEPARATORS.split(path))


def backend_url_problem(value: object) -> str | None:
    """What is wrong with ``value`` as a backend URL (None: nothing)."""
    if not isinstance(value, str) or not value.startswith(("http://", "https://")):
        return "must be an http:// or https:// URL"
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - a port out of range, or not a number, raises here
    except ValueError:
        return "has a port that is not a number from 0 to 65535"
    if not parts.hostname:
        return "names no host"
    try:
        parts.hostname.encode("idna")  # what the gateway sends as Host
    except UnicodeError:
        return "has a host name that is not valid (an empty or too long label, or a character IDNA refuses)"
    if parts.query or parts.fragment or "@" in parts.netloc:
        return "must be scheme://host[:port][/path], without user, query or fragment"
    return None


def plain_path(value: str) -> bool:
    """Whether ``value`` is a URL path a request can match as written: absolute, without a query,
    fragment, template, whitespace or a ``.``/``..`` segment (refused in requests)."""
    return (
        value.startswith("/")
        and not any(c in value for c in "?#{}\\")
        and not any(c.isspace() for c in value)
        and not dot_segments(value)
    )


def resolve_path(base: Path, value: str) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else (base / p)


def read_toml(path: Path) -> dict[str, Any]:
    """A TOML file as a dict; a missing or malformed file is a `ConfigError`."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError("", f"configuration file {path} not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("", f"{path} is not valid TOML: {exc}") from None

"""``[registry]`` and ``[registry.admin]``: where database registrations live and the admin API's
mount and credentials, read into frozen `RegistryConfig` / `RegistryAdminConfig`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from asgi_apim._schema import Table
from asgi_apim.errors import ConfigError


@dataclass(frozen=True)
class RegistryAdminConfig:
    """``[registry.admin]``: the admin API's mount and its own credentials (never the API callers')."""

    enabled: bool = False
    path: str = "/admin"
    users_file: Path | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    client_certificates: tuple[str, ...] = ()  # SHA-256 fingerprints, 64 lowercase hex characters


@dataclass(frozen=True)
class RegistryConfig:
    """``[registry]``: None ``url`` (no ``[registry]`` table) means no database registrations."""

    url: str | None = field(default=None, repr=False)
    expiry_warning_days: int = 30
    admin: RegistryAdminConfig = field(default_factory=RegistryAdminConfig)


DATABASE_SCHEMES = ("sqlite:///", "postgresql://", "postgresql+psycopg://", "postgres://")
DEFAULT_REGISTRY_FILE = "registry.db"  # [registry] without url: sqlite:///registry.db beside the file


def parse_fingerprint(key: str, value: str) -> str:
    """A SHA-256 fingerprint as 64 lowercase hex characters; colons and spaces between bytes are allowed."""
    digits = value.replace(":", "").replace(" ", "").lower()
    if len(digits) != 64 or any(c not in "0123456789abcdef" for c in digits):
        raise ConfigError(key, f"{value!r} is not a SHA-256 fingerprint (64 hex digits, colons allowed)")
    return digits


def _registry_admin(t: Table) -> RegistryAdminConfig:
    path = t.path_prefix("path") if t.has("path") else "/admin"
    pins = t.strs("client_certificates")
    admin = RegistryAdminConfig(
        enabled=t.bool("enabled", False),
        path=path,
        users_file=t.path("users_file"),
        username=t.str("username"),
        password=t.str("password"),
        client_certificates=tuple(
            parse_fingerprint(f"{t.key}.client_certificates[{i}]", v) for i, v in enumerate(pins)
        ),
    )
    t.done()
    if path == "/":
        raise ConfigError(f"{t.key}.path", "must not be / (the admin API would take every path)")
    if (admin.username is None) != (admin.password is None):
        raise ConfigError(f"{t.key}.password" if admin.password is None else f"{t.key}.username", "is needed too")
    if admin.enabled and not (admin.users_file or admin.username or admin.client_certificates):
        raise ConfigError(
            t.key, "is enabled without credentials: set users_file, username and password, or client_certificates"
        )
    return admin


def parse_registry(root: Table) -> RegistryConfig:
    """``[registry]``; present (even empty), the registry is on, at ``sqlite:///registry.db`` by default."""
    if not root.has("registry"):
        return RegistryConfig()
    t = root.table("registry")
    url = t.database_url("url") if t.has("url") else f"sqlite:///{t.base / DEFAULT_REGISTRY_FILE}"
    if not url or not url.startswith(DATABASE_SCHEMES) or url in DATABASE_SCHEMES:
        raise ConfigError(f"{t.key}.url", "must be sqlite:///FILE or postgresql://user:password@host/database")
    cfg = RegistryConfig(
        url=url,
        expiry_warning_days=int(t.number("expiry_warning_days", 30, maximum=3650)),
        admin=_registry_admin(t.table("admin")),
    )
    t.done()
    return cfg

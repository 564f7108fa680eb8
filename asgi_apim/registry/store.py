"""The registry's table, in SQLite (one host) or PostgreSQL (several), through SQLAlchemy Core.

One table holds every client certificate registered for an API: API, alias,
certificate (PEM), its SHA-256 fingerprint, tier, when it was created and
when it was removed (a removed row is kept, marked, never deleted). A second
table holds one row, the *change marker*: a serial bumped in the same
transaction as every change, so a node polls one integer and reads the whole
list only when it moved. A third holds the schema version; `MIGRATIONS` are
applied in order, once, under a lock, on first use.

SQLite runs in WAL mode with a busy timeout, and every write transaction
begins ``IMMEDIATE``, so two processes on one host share the file safely.
PostgreSQL is reached with psycopg 3 (``postgresql://`` URLs are read as
``postgresql+psycopg://``) with a connect timeout and a statement timeout.

Every method blocks: call it from a worker thread, never on the event loop.
A database that cannot be reached or answers with an error raises
`RegistryUnavailable`, whose text never holds the URL.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Engine,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError
from sqlalchemy.pool import NullPool

from asgi_apim.errors import RegistryError, RegistryNotFound, RegistryUnavailable

logger = logging.getLogger("asgi_apim.registry")

CONNECT_TIMEOUT = 5  # seconds to reach the database
STATEMENT_TIMEOUT_MS = 10_000  # PostgreSQL: a statement running longer is cancelled
BUSY_TIMEOUT_MS = 5_000  # SQLite: how long to wait for another process's write lock

metadata = MetaData()

schema_version = Table(
    "asgi_apim_schema_version",
    metadata,
    Column("version", Integer, nullable=False),
)

client_certificates = Table(
    "asgi_apim_client_certificate",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("api", String(255), nullable=False),
    Column("alias", String(255), nullable=False),
    Column("certificate", Text, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("tier", String(255), nullable=False),
    Column("created", DateTime(timezone=True), nullable=False),
    Column("removed", DateTime(timezone=True), nullable=True),
)
# one live registration per (API, alias) and per (API, certificate); removed rows are history
_ACTIVE = text("removed IS NULL")
Index(
    "asgi_apim_client_certificate_alias",
    client_certificates.c.api,
    client_certificates.c.alias,
    unique=True,
    sqlite_where=_ACTIVE,
    postgresql_where=_ACTIVE,
)
Index(
    "asgi_apim_client_certificate_sha256",
    client_certificates.c.api,
    client_certificates.c.sha256,
    unique=True,
    sqlite_where=_ACTIVE,
    postgresql_where=_ACTIVE,
)

registry_state = Table(
    "asgi_apim_registry_state",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("serial", BigInteger, nullable=False),
    Column("updated", DateTime(timezone=True), nullable=False),
)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _v1(conn: Connection) -> None:
    """The table, its two partial unique indexes and the change marker."""
    metadata.create_all(conn, tables=[client_certificates, registry_state])
    conn.execute(insert(registry_state).values(id=1, serial=0, updated=_now()))


MIGRATIONS: tuple[Callable[[Connection], None], ...] = (_v1,)  # MIGRATIONS[i] takes the schema to version i + 1


@dataclass(frozen=True)
class StoredCertificate:
    """One live registration as the table holds it."""

    api: str
    alias: str
    certificate: str  # PEM
    sha256: str  # 64 lowercase hex characters, of the DER
    tier: str
    created: datetime.datetime


def engine_url(url: str) -> str:
    """SQLAlchemy's URL for a ``[registry] url``: PostgreSQL through psycopg 3."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def _sqlite_engine(url: str) -> Engine:
    engine = create_engine(url, poolclass=NullPool, connect_args={"timeout": BUSY_TIMEOUT_MS / 1000})

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # pysqlite begins nothing itself: `_begin` does
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        # a write takes the write lock when it begins (waiting up to the busy timeout), never half-way through
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("write") else "BEGIN")

    return engine


def _postgres_engine(url: str) -> Engine:
    return create_engine(
        url,
        pool_pre_ping=True,
        pool_size=2,
        max_overflow=2,
        pool_timeout=CONNECT_TIMEOUT,
        connect_args={
            "connect_timeout": CONNECT_TIMEOUT,
            "options": f"-c statement_timeout={STATEMENT_TIMEOUT_MS}",
            "application_name": "asgi-apim",
        },
    )


def _reason(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    first = str(orig).strip().splitlines()[0] if str(orig).strip() else ""
    return f"{type(orig).__name__}: {first}" if first else type(orig).__name__


class RegistryStore:
    """The registry database at ``url``; the schema is created or migrated on first use."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.dialect = "sqlite" if url.startswith("sqlite:") else "postgresql"
        full = engine_url(url)
        self.engine = _sqlite_engine(full) if self.dialect == "sqlite" else _postgres_engine(full)
        self._ready = False

    def __repr__(self) -> str:
        return f"RegistryStore({self.dialect})"  # never the URL: it may hold a password

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _transaction(self, *, write: bool) -> Iterator[Connection]:
        try:
            if not self._ready:
                self._migrate()
            with self.engine.connect() as conn:
                conn.execution_options(write=write)
                with conn.begin():
                    yield conn
        except RegistryError:
            raise
        except IntegrityError as exc:
            raise RegistryError(f"the registry refused the change ({_reason(exc)})") from None
        except (DBAPIError, SQLAlchemyError, OSError) as exc:
            raise RegistryUnavailable(f"registry database unavailable ({_reason(exc)})") from None

    def _migrate(self) -> None:
        with self.engine.connect() as conn:
            conn.execution_options(write=True)
            with conn.begin():
                if self.dialect == "postgresql":  # two nodes starting at once: one migrates, the other waits
                    conn.execute(select(func.pg_advisory_xact_lock(0x61736769)))
                schema_version.create(conn, checkfirst=True)
                current = conn.execute(select(func.max(schema_version.c.version))).scalar() or 0
                if current > len(MIGRATIONS):
                    raise RegistryUnavailable(
                        f"the registry database's schema is version {current}, newer than this asgi-apim"
                        f" knows ({len(MIGRATIONS)}): upgrade asgi-apim"
                    )
                for version in range(current + 1, len(MIGRATIONS) + 1):
                    MIGRATIONS[version - 1](conn)
                    conn.execute(insert(schema_version).values(version=version))
                    logger.info("registry database schema migrated to version %d", version)
        self._ready = True

    def schema_version(self) -> int:
        with self._transaction(write=False) as conn:
            return int(conn.execute(select(func.max(schema_version.c.version))).scalar() or 0)

    def marker(self) -> int:
        """The change marker: a serial that every change moves."""
        with self._transaction(write=False) as conn:
            return int(conn.execute(select(registry_state.c.serial).where(registry_state.c.id == 1)).scalar_one())

    def active(self, api: str | None = None) -> list[StoredCertificate]:
        """The live registrations (of ``api``), by API and alias."""
        c = client_certificates.c
        query = select(c.api, c.alias, c.certificate, c.sha256, c.tier, c.created).where(c.removed.is_(None))
        if api is not None:
            query = query.where(c.api == api)
        with self._transaction(write=False) as conn:
            rows = conn.execute(query.order_by(c.api, c.alias)).all()
        return [_stored(row) for row in rows]

    def add(self, api: str, alias: str, certificate: str, sha256: str, tier: str) -> StoredCertificate:
        """Register; `RegistryError` if the API already has this alias or this certificate."""
        c = client_certificates.c
        created = _now()
        with self._transaction(write=True) as conn:
            clash = conn.execute(
                select(c.alias, c.sha256).where(
                    c.removed.is_(None), c.api == api, (c.alias == alias) | (c.sha256 == sha256)
                )
            ).first()
            if clash is not None:
                if clash.alias == alias:
                    raise RegistryError(f"API {api!r} already has a registered certificate with alias {alias!r}")
                raise RegistryError(f"this certificate is already registered for API {api!r} as {clash.alias!r}")
            conn.execute(
                insert(client_certificates).values(
                    api=api, alias=alias, certificate=certificate, sha256=sha256, tier=tier, created=created
                )
            )
            self._bump(conn)
        return StoredCertificate(api, alias, certificate, sha256, tier, created)

    def remove(self, api: str, alias: str) -> None:
        """Mark the registration removed; `RegistryNotFound` if there is none."""
        self._change(api, alias, {"removed": _now()})

    def update_tier(self, api: str, alias: str, tier: str) -> None:
        """Change a registration's tier; `RegistryNotFound` if there is none."""
        self._change(api, alias, {"tier": tier})

    def _change(self, api: str, alias: str, values: dict[str, Any]) -> None:
        c = client_certificates.c
        with self._transaction(write=True) as conn:
            result = conn.execute(
                update(client_certificates).where(c.api == api, c.alias == alias, c.removed.is_(None)).values(**values)
            )
            if result.rowcount == 0:
                raise RegistryNotFound(f"API {api!r} has no certificate registered with alias {alias!r}")
            self._bump(conn)

    @staticmethod
    def _bump(conn: Connection) -> None:
        conn.execute(
            update(registry_state)
            .where(registry_state.c.id == 1)
            .values(serial=registry_state.c.serial + 1, updated=_now())
        )


def _stored(row: Any) -> StoredCertificate:
    created = row.created
    if isinstance(created, str):  # pragma: no cover - SQLAlchemy parses SQLite's text itself
        created = datetime.datetime.fromisoformat(created)
    if created.tzinfo is None:  # SQLite keeps no zone: every value was written in UTC
        created = created.replace(tzinfo=datetime.UTC)
    return StoredCertificate(row.api, row.alias, row.certificate, row.sha256, row.tier, created)

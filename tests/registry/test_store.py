"""The registry table, on SQLite and on a real PostgreSQL: changes, refusals, the marker, migrations."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import insert

from asgi_apim.errors import RegistryError, RegistryNotFound, RegistryUnavailable
from asgi_apim.registry.store import MIGRATIONS, RegistryStore, engine_url, schema_version

FP_A = "a" * 64
FP_B = "b" * 64


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> RegistryStore:
    url = f"sqlite:///{tmp_path / 'registry.db'}" if request.param == "sqlite" else request.getfixturevalue("pg_url")
    s = RegistryStore(url)
    request.addfinalizer(s.close)
    return s


def test_created_on_first_use_at_the_current_schema_version(store: RegistryStore) -> None:
    assert store.schema_version() == len(MIGRATIONS)
    assert store.marker() == 0
    assert store.active() == []


def test_add_list_update_remove_and_the_marker_moves_with_each(store: RegistryStore) -> None:
    added = store.add("pets", "partner-a", "PEM-A", FP_A, "Gold")
    assert added.created.tzinfo is not None
    assert store.marker() == 1
    store.add("orders", "partner-b", "PEM-B", FP_B, "Silver")
    assert [(s.api, s.alias, s.tier) for s in store.active()] == [
        ("orders", "partner-b", "Silver"),
        ("pets", "partner-a", "Gold"),
    ]
    assert [s.alias for s in store.active("pets")] == ["partner-a"]
    store.update_tier("pets", "partner-a", "Bronze")
    assert store.active("pets")[0].tier == "Bronze"
    assert store.marker() == 3
    store.remove("pets", "partner-a")
    assert store.active("pets") == []
    assert store.marker() == 4


def test_duplicate_alias_or_certificate_of_one_api_is_refused(store: RegistryStore) -> None:
    store.add("pets", "partner-a", "PEM-A", FP_A, "Gold")
    with pytest.raises(RegistryError, match="alias 'partner-a'"):
        store.add("pets", "partner-a", "PEM-B", FP_B, "Gold")
    with pytest.raises(RegistryError, match="already registered for API 'pets' as 'partner-a'"):
        store.add("pets", "other", "PEM-A", FP_A, "Gold")
    store.add("orders", "partner-a", "PEM-A", FP_A, "Gold")  # another API may register the same certificate
    assert store.marker() == 2  # refused changes do not move the marker


def test_a_removed_alias_can_be_registered_again(store: RegistryStore) -> None:
    store.add("pets", "partner-a", "PEM-A", FP_A, "Gold")
    store.remove("pets", "partner-a")
    store.add("pets", "partner-a", "PEM-A", FP_A, "Silver")
    assert [(s.alias, s.tier) for s in store.active()] == [("partner-a", "Silver")]


def test_changing_what_is_not_there_is_not_found(store: RegistryStore) -> None:
    with pytest.raises(RegistryNotFound):
        store.remove("pets", "nobody")
    with pytest.raises(RegistryNotFound):
        store.update_tier("pets", "nobody", "Gold")
    assert store.marker() == 0


def test_a_schema_newer_than_the_code_is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    first = RegistryStore(url)
    first.marker()
    with first.engine.begin() as conn:
        conn.execute(insert(schema_version).values(version=len(MIGRATIONS) + 1))
    with pytest.raises(RegistryUnavailable, match="newer than this asgi-apim"):
        RegistryStore(url).marker()


def test_sqlite_two_stores_on_one_file_share_it_and_writes_wait(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    stores = [RegistryStore(url) for _ in range(2)]
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            for i in range(15):
                stores[n].add("pets", f"s{n}-{i}", "PEM", f"{n}{i:063d}", "Gold")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(stores[1].active()) == 30 and stores[0].marker() == 30
    with stores[0].engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"


def test_unreachable_database_is_unavailable_and_the_error_never_shows_the_password(postgres: object) -> None:
    store = RegistryStore("postgresql://apim:s3cret-pw@127.0.0.1:1/nowhere")
    with pytest.raises(RegistryUnavailable) as info:
        store.marker()
    assert "s3cret-pw" not in str(info.value) and "s3cret-pw" not in repr(store)
    missing = RegistryStore(f"sqlite:///{Path('/nonexistent-dir/r.db')}")
    with pytest.raises(RegistryUnavailable):
        missing.active()


def test_postgres_urls_use_psycopg_3() -> None:
    assert engine_url("postgresql://u:p@h/db") == "postgresql+psycopg://u:p@h/db"
    assert engine_url("postgres://h/db") == "postgresql+psycopg://h/db"
    assert engine_url("sqlite:////tmp/x.db") == "sqlite:////tmp/x.db"

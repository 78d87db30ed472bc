"""sdl.database: store URLs, and column types that behave the same on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa

from sdl.database import DatabaseError, make_engine, parse_store_url, redact
from sdl.errors import InvalidInput
from sdl.service.db import ItemRow, ServiceDB
from sdl.store import RunRow, Store

UTC = dt.timezone.utc


def test_plain_postgresql_urls_use_psycopg3():
    for url in ("postgresql://u:pw@db.example:5432/sdl", "postgres://u:pw@db.example/sdl"):
        assert parse_store_url(url).drivername == "postgresql+psycopg"
    assert parse_store_url("postgresql+psycopg://u@h/sdl").drivername == "postgresql+psycopg"
    assert parse_store_url("sqlite:///x.sqlite").drivername == "sqlite"
    assert "pw" not in redact("postgresql://u:pw@h/sdl")


@pytest.mark.parametrize("url, says", [
    ("mysql://u@h/sdl", "unsupported database 'mysql'"),
    ("not a url", "not a database URL"),
    ("postgresql://u@h", "name the database"),
])
def test_unsupported_urls_name_store_url(url, says):
    with pytest.raises(InvalidInput) as err:
        Store(url)
    assert err.value.field == "store_url" and says in err.value.message
    assert "sqlite:///" in err.value.message and "postgresql://" in err.value.message


def test_an_unreachable_database_is_a_clear_error():
    with pytest.raises(DatabaseError) as err:
        Store("postgresql://sdl:secret@127.0.0.1:1/sdl")  # nothing listens on port 1
    text = str(err.value)
    assert err.value.field == "store_url" and text.startswith("store_url: cannot open the database")
    assert "127.0.0.1:1/sdl" in text and "secret" not in text
    with pytest.raises(DatabaseError):
        ServiceDB("postgresql://sdl@127.0.0.1:1/sdl")


def test_datetimes_come_back_aware_in_utc(store):
    store.create_campaign("c", "t", {})
    row = store.campaign("c")
    assert row.created_at.tzinfo is not None and row.created_at.utcoffset() == dt.timedelta(0)
    # an aware time in another zone is stored as the same instant; a naive one is taken as UTC
    cest = dt.timezone(dt.timedelta(hours=2))
    t = dt.datetime(2026, 6, 1, 14, 30, 15, 123456, tzinfo=cest)
    with store.session() as s:
        s.add(RunRow(uid="r-aware", campaign_id="c", started_at=t))
        s.add(RunRow(uid="r-naive", campaign_id="c", started_at=dt.datetime(2026, 6, 1, 12, 30, 15, 123456)))
    runs = {r.uid: r for r in store.runs("c")}
    assert runs["r-aware"].started_at == t and runs["r-aware"].started_at.tzinfo == UTC
    assert runs["r-naive"].started_at == t  # 12:30 UTC is 14:30 at +02:00
    # and comparisons in SQL use the same instant
    with store.session() as s:
        later = s.scalars(sa.select(RunRow.uid).where(RunRow.started_at > dt.datetime(2026, 6, 1, 14, 0, tzinfo=cest)))
        assert set(later) == {"r-aware", "r-naive"}
        none = s.scalars(sa.select(RunRow.uid).where(RunRow.started_at > dt.datetime(2026, 6, 1, 12, 31, tzinfo=UTC)))
        assert list(none) == []


def test_json_documents_come_back_exactly_as_written(store):
    """Key order kept (json, not jsonb, on PostgreSQL), big documents, unicode."""
    store.create_campaign("c", "t", {"zeta": 1, "alpha": 2})
    store.start_run("r", "c", None)
    doc = {"uid": "r", "time": 1.5, "zz": {"b": 1, "a": [1, 2, {"y": None, "x": True}]}, "aa": "µ-XRD Å",
           "data": {"spectrum": list(range(200_000))}}
    store.add_document("r", "event", doc)
    [(name, back)] = store.documents("r")
    assert name == "event" and back == doc
    assert list(back) == ["uid", "time", "zz", "aa", "data"] and list(back["zz"]) == ["b", "a"]
    assert list(store.campaign("c").spec) == ["zeta", "alpha"]


def test_non_finite_numbers_in_json_columns_are_stored_the_same_way_everywhere(store_url):
    """PostgreSQL's json refuses NaN; every JSON column writes it as the record does (null)."""
    db = ServiceDB(store_url)
    try:
        with db.session() as s:
            s.add(ItemRow(id="i1", kind="experiment", instrument="sim-xrd", plan="p", proposal_id="p",
                          user_id="u", params={"x": float("nan"), "y": float("inf"), "n": 2},
                          result={"fom": float("nan")}))
        with db.read() as s:
            item = s.get(ItemRow, "i1")
            assert item.params == {"x": None, "y": 1e308, "n": 2} and item.result == {"fom": None}
    finally:
        db.close()


def test_column_limits_are_checked_the_same_on_both_backends(store):
    """PostgreSQL refuses a value longer than its VARCHAR; SQLite stores it. The store checks first."""
    with pytest.raises(InvalidInput) as err:
        store.create_campaign("c" * 33, "t", {})
    assert err.value.field == "campaign_id"
    with pytest.raises(InvalidInput) as err:
        store.create_campaign("c", "n" * 201, {})
    assert err.value.field == "name"
    store.create_campaign("c" * 32, "n" * 200, {})
    assert store.campaign("c" * 32).name == "n" * 200


def test_big_integer_ids_autoincrement(store):
    store.create_campaign("c", "t", {})
    store.start_run("r", "c", None)
    for i in range(3):
        store.add_document("r", "event", {"seq_num": i})
    with store.session() as s:
        ids = list(s.scalars(sa.text("SELECT id FROM documents ORDER BY id")))
    assert len(ids) == 3 and ids == sorted(set(ids)) and all(isinstance(i, int) for i in ids)


@pytest.mark.sqlite_only
def test_sqlite_store_runs_in_wal_mode_with_foreign_keys(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'sub' / 'x.sqlite'}")  # makes the folder
    try:
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
    finally:
        store.close()


def test_in_memory_sqlite_is_one_database_for_all_threads():
    import threading

    store = Store("sqlite:///:memory:")
    try:
        t = threading.Thread(target=store.create_campaign, args=("c", "t", {}))
        t.start()
        t.join()
        assert [c.id for c in store.campaigns()] == ["c"]
    finally:
        store.close()


def test_engines_for_postgresql_check_connections_before_use():
    engine = make_engine("postgresql://u@127.0.0.1:1/sdl")
    try:
        assert engine.pool._pre_ping and engine.dialect.driver == "psycopg"
    finally:
        engine.dispose()


def test_a_pooled_connection_left_mid_query_is_replaced(store_url):
    """An exception that lands inside a driver call (bluesky injects one into its thread on
    Ctrl-C) can leave a pooled connection mid-query: every later pre-ping on it fails. The
    pool must replace it, or the next store write fails (it failed a campaign's experiment
    once in CI)."""
    if not store_url.startswith("postgresql"):
        pytest.skip("a psycopg connection state; this run is on SQLite")
    store = Store(store_url, pool_size=1, max_overflow=0, pool_timeout=3)
    try:
        store.create_campaign("c1", "one", {})
        (record,) = list(store.engine.pool._pool.queue)  # the only pooled connection, idle
        raw = record.dbapi_connection
        raw.pgconn.send_query(b"SELECT pg_sleep(2)")  # left mid-query
        assert raw.info.transaction_status.name == "ACTIVE"
        for _ in range(3):  # replaced at the next checkout: the store goes on
            assert store.campaign("c1").name == "one"
        assert record.dbapi_connection is not raw
    finally:
        store.close()

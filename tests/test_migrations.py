"""Schema migrations (alembic, sdl/migrations): an empty database upgraded to head has
exactly the models' schema, old databases keep their rows, two processes opening a new
database migrate it once. Runs on SQLite, and on PostgreSQL with $SDL_TEST_DATABASE_URL."""

from __future__ import annotations

import datetime as dt
import pprint
import subprocess
import sys

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from sdl.database import (
    DatabaseError,
    current_revisions,
    downgrade,
    head_revisions,
    make_engine,
    script_directory,
    upgrade,
)
from sdl.service.db import ServiceBase, ServiceDB
from sdl.store import Base, Store
from sdl.workflows.tables import WorkflowBase

METADATA = [Base.metadata, ServiceBase.metadata, WorkflowBase.metadata]
FIRST = "0001"


@pytest.fixture
def engine(store_url):
    e = make_engine(store_url)
    yield e
    e.dispose()


def _diff(engine) -> list:
    with engine.connect() as conn:
        return compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), METADATA)


def _tables(engine) -> set[str]:
    return set(sa.inspect(engine).get_table_names()) - {"alembic_version"}


def test_upgrade_of_an_empty_database_gives_exactly_the_models_schema(engine):
    assert current_revisions(engine) == ()
    before, after = upgrade(engine)
    assert before == () and after == head_revisions()
    diff = _diff(engine)
    assert diff == [], ("the models differ from the migrations: add a revision (sdl db revision -m ...; "
                        "see sdl/migrations/README):\n" + pprint.pformat(diff))
    assert _tables(engine) == {t for md in METADATA for t in md.tables}


def test_one_linear_history_starting_at_0001():
    revs = list(script_directory().walk_revisions())  # newest first
    assert len(head_revisions()) == 1, "migrations branched: merge the heads"
    assert revs[-1].revision == FIRST and revs[-1].down_revision is None
    for newer, older in zip(revs, revs[1:]):
        assert newer.down_revision == older.revision


def test_store_and_service_open_bring_the_database_to_head(store_url):
    store = Store(store_url)
    try:
        assert current_revisions(store.engine) == head_revisions()
        assert _diff(store.engine) == []
        again = ServiceDB(store_url)  # the same history: nothing left to do
        again.close()
        assert current_revisions(store.engine) == head_revisions()
    finally:
        store.close()


# ------------------------------------------------------------------- data kept
def _fill(engine, rows_per_table: int = 2) -> dict[str, list[dict]]:
    """Rows in every table, as the schema at the database's revision has them (reflected,
    not from today's models): a value for every column, foreign keys pointing at rows."""
    md = sa.MetaData()
    md.reflect(engine)
    now = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
    written: dict[str, list[dict]] = {}
    with engine.begin() as conn:
        for table in md.sorted_tables:
            if table.name == "alembic_version":
                continue
            rows = []
            for i in range(rows_per_table):
                row: dict = {}
                for col in table.columns:
                    fks = list(col.foreign_keys)
                    if fks:
                        ref = fks[0].column
                        row[col.name] = written[ref.table.name][i][ref.name]
                        continue
                    if col.primary_key and col.autoincrement is not False and isinstance(
                            col.type, sa.Integer) and len(table.primary_key.columns) == 1:
                        continue  # assigned by the database
                    t = col.type
                    if isinstance(t, sa.Boolean):
                        value = bool(i % 2)
                    elif isinstance(t, sa.Integer):
                        value = 10 + i
                    elif isinstance(t, sa.Float):
                        value = 0.5 + i
                    elif isinstance(t, sa.DateTime):
                        value = now + dt.timedelta(minutes=i)
                    elif isinstance(t, sa.JSON):
                        value = {"z": i, "a": [1.5, None, "x"], "nested": {"k": table.name}}
                    else:  # strings and text
                        length = getattr(t, "length", None) or 64
                        value = f"{table.name[:8]}{col.name[:8]}{i}"[-length:]
                    row[col.name] = value
                rows.append(row)
            conn.execute(table.insert(), rows)
            written[table.name] = [dict(r) for r in conn.execute(sa.select(table).order_by(
                *table.primary_key.columns)).mappings()]
    return written


def _read(engine, tables: dict[str, list[dict]]) -> dict[str, list[dict]]:
    md = sa.MetaData()
    md.reflect(engine)
    out = {}
    with engine.connect() as conn:
        for name, rows in tables.items():
            table = md.tables[name]
            cols = [table.c[c] for c in rows[0]]
            out[name] = [dict(r) for r in conn.execute(sa.select(*cols).order_by(
                *table.primary_key.columns)).mappings()]
    return out


def _same(a: dict, b: dict) -> bool:
    def norm(v):  # SQLite hands datetimes back naive (UTC); PostgreSQL aware
        if isinstance(v, dt.datetime) and v.tzinfo is not None:
            return v.astimezone(dt.timezone.utc).replace(tzinfo=None)
        return v

    return {k: [{c: norm(v) for c, v in r.items()} for r in rows] for k, rows in a.items()} == \
        {k: [{c: norm(v) for c, v in r.items()} for r in rows] for k, rows in b.items()}


def test_a_database_made_at_0001_upgrades_to_head_keeping_every_row(engine):
    upgrade(engine, FIRST)
    assert current_revisions(engine) == (FIRST,)
    written = _fill(engine)
    assert set(written) == _tables(engine) and all(len(rows) == 2 for rows in written.values())
    upgrade(engine)  # every later revision (none yet if head is 0001)
    assert current_revisions(engine) == head_revisions()
    assert _same(_read(engine, written), written)
    assert _diff(engine) == []
    # and the stores work on it
    store = Store(str(engine.url.render_as_string(hide_password=False)))
    try:
        assert {c.id for c in store.campaigns()} == {r["id"] for r in written["campaigns"]}
    finally:
        store.close()


def test_downgrade_to_base_drops_everything_and_upgrade_recreates_it(engine):
    upgrade(engine)
    written = _fill(engine)
    assert written["documents"] and written["svc_queue"]
    downgrade(engine, "base")
    assert current_revisions(engine) == ()
    assert _tables(engine) == set()
    upgrade(engine)
    assert current_revisions(engine) == head_revisions()
    assert _diff(engine) == []
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM documents")).scalar() == 0
    assert _fill(engine)  # the recreated tables take rows again


def test_a_database_made_before_migrations_is_adopted(engine, store_url):
    """An earlier sdl made its tables with create_all and no alembic_version table (a
    CLI-only user has the record's tables and none of the service's)."""
    upgrade(engine, FIRST)
    md = sa.MetaData()
    md.reflect(engine)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE alembic_version"))
        for table in reversed(md.sorted_tables):  # dependents first
            if table.name.startswith("svc_"):
                table.drop(conn)
        conn.execute(sa.text("INSERT INTO campaigns (id, name, spec, status, message, created_at, updated_at) "
                             "VALUES ('old', 'kept', '{}', 'completed', '', :t, :t)"),
                     {"t": dt.datetime(2025, 5, 1, tzinfo=dt.timezone.utc)})
    assert current_revisions(engine) == ()
    store = Store(store_url)
    try:
        assert current_revisions(store.engine) == head_revisions()
        assert [c.name for c in store.campaigns()] == ["kept"]
        assert _diff(store.engine) == []
    finally:
        store.close()


def test_a_database_from_a_newer_sdl_is_refused_with_a_clear_error(engine, store_url):
    upgrade(engine)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '9999'"))
    with pytest.raises(DatabaseError) as err:
        Store(store_url)
    assert err.value.field == "store_url" and "9999" in str(err.value) and "newer sdl" in str(err.value)


_OPENER = """
import os, sys, time
from sdl.service.db import ServiceDB
from sdl.store import Store
url, go, kind = sys.argv[1:4]
print("ready", flush=True)
while not os.path.exists(go):
    time.sleep(0.002)
(Store if kind == "store" else ServiceDB)(url).close()
print("opened", flush=True)
"""


def test_processes_opening_a_new_database_together_migrate_it_once(store_url, tmp_path):
    """Processes that open a new database at the same moment migrate it once and all
    succeed (PostgreSQL: advisory lock; SQLite: BEGIN IMMEDIATE)."""
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", _OPENER, store_url, str(go), kind],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for kind in ("store", "service", "store")]
    try:
        for p in procs:
            assert p.stdout.readline().strip() == "ready", p.stdout.read()
        go.touch()  # all at once
        outs = [p.communicate(timeout=120)[0] for p in procs]
    finally:
        for p in procs:
            p.kill() if p.poll() is None else None
    assert [p.returncode for p in procs] == [0] * len(procs), "\n".join(outs)
    engine = make_engine(store_url)
    try:
        assert current_revisions(engine) == head_revisions()
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM alembic_version")).scalar() == 1
        assert _diff(engine) == []
    finally:
        engine.dispose()

"""The database under every table sdl keeps: one engine factory, portable column types,
and the schema migrations (alembic) that bring a database to the current schema.

The record (:mod:`sdl.store`, ``Base``) and the service's tables
(:mod:`sdl.service.db`, ``ServiceBase``) live in the same database and share one
migration history in ``sdl/migrations/``. The database is chosen by URL:

- ``sqlite:///PATH`` (the default, nothing to install): WAL journal, so readers never
  block the writer; ``synchronous=NORMAL``; foreign keys enforced; writers wait up to
  30 s for the lock.
- ``postgresql://USER:PASSWORD@HOST:PORT/DB`` (a facility): psycopg 3 (a plain
  ``postgresql://`` or ``postgres://`` URL is mapped to ``postgresql+psycopg://``),
  connections checked before use (``pool_pre_ping``), sessions in UTC.

Both give the same results through the same code:

- datetimes are stored as UTC and always come back timezone-aware in UTC
  (:class:`UTCDateTime`; SQLite itself keeps no zone, PostgreSQL ``timestamptz``
  would otherwise answer in the session's zone);
- JSON columns are ``JSON`` on SQLite and ``json`` on PostgreSQL, not ``jsonb``: a
  document comes back exactly as written, keys in their order, so a replay or an
  export reads the same bytes on both. Values are written by :func:`json_dumps`: NaN
  and infinities, which PostgreSQL's json type refuses, are written as the record
  writes them everywhere (null and +-1e308, see :func:`sdl.jsonsafe.jsonable`) on both
  backends, numpy scalars and arrays as numbers and lists;
- long text is ``TEXT`` (unbounded on both); ids of the high-volume tables
  (documents, audit, usage, observations) are 64-bit on PostgreSQL (:data:`BigID`)
  and SQLite's ``INTEGER PRIMARY KEY`` rowid (64-bit already) on SQLite.

Opening a store brings its database to the newest schema (:func:`ensure_schema`):
at once when it is there already (one query), otherwise under a lock (PostgreSQL: a
transaction-scoped advisory lock; SQLite: ``BEGIN IMMEDIATE``) so two processes that
open a new database together migrate it once.
"""

from __future__ import annotations

import atexit
import datetime as dt
import json
import os
import secrets
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from sqlalchemy import BigInteger, DateTime, Integer, create_engine, event, make_url, text
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError
from sqlalchemy.pool import NullPool, StaticPool
from sqlalchemy.types import TypeDecorator

from sdl.errors import InvalidInput, SdlError
from sdl.jsonsafe import jsonable

#: The longest instrument name the service's tables hold: a table pool is named by its path
#: (``pool:/data/campaigns/2026/screen.csv``), so 60 characters were too few (migration 0011).
INSTRUMENT_NAME_MAX = 255
#: A worker's id, ``HOST:PID:INSTRUMENT``: the instrument's name and room for a host name.
WORKER_ID_MAX = INSTRUMENT_NAME_MAX + 145

#: the alembic script folder, shipped inside the package
MIGRATIONS = Path(__file__).resolve().with_name("migrations")
#: key of the PostgreSQL advisory lock that serialises migrations (any constant bigint)
MIGRATION_LOCK_KEY = 0x5D1_0A1E
SUPPORTED = "sqlite:///PATH or postgresql://USER:PASSWORD@HOST:PORT/DATABASE"
UTC = dt.timezone.utc


class DatabaseError(SdlError, RuntimeError):
    """The database named by ``store_url`` cannot be used (unreachable, or too new)."""

    def __init__(self, message: str):
        self.field = "store_url"
        self.message = message
        super().__init__(f"store_url: {message}")


# ----------------------------------------------------------------------------- types
class UTCDateTime(TypeDecorator):
    """A point in time, stored as UTC and read back timezone-aware in UTC on every backend.

    A naive datetime given to it is taken to be UTC already (as sdl writes them).
    On SQLite the stored text is the UTC wall time, as before this type existed.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> Any:
        if isinstance(value, dt.datetime):
            value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
            if dialect.name == "sqlite":
                value = value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: Any, dialect: Any) -> Any:
        if isinstance(value, dt.datetime):
            return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        return value


#: an autoincrement primary key: BIGSERIAL on PostgreSQL, the rowid on SQLite
#: (only a column declared exactly ``INTEGER PRIMARY KEY`` autoincrements there)
BigID = BigInteger().with_variant(Integer(), "sqlite")


def json_dumps(obj: Any) -> str:
    """Serialise a JSON column's value the same way on SQLite and PostgreSQL."""
    try:
        return json.dumps(obj, allow_nan=False)
    except (ValueError, TypeError):  # NaN or infinity, numpy values
        return json.dumps(jsonable(obj), allow_nan=False)


# ------------------------------------------------------------------------------ URLs
def redact(url: str | URL) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not a URL at all
        return "<not a URL>"


def parse_store_url(url: str | URL) -> URL:
    """Check a store URL and pick the driver: SQLite, or PostgreSQL through psycopg 3."""
    try:
        u = make_url(url)
    except ArgumentError:
        raise InvalidInput("store_url", f"not a database URL; use {SUPPORTED}", redact(url)) from None
    backend = u.get_backend_name()
    if backend in ("postgresql", "postgres"):
        if u.drivername in ("postgresql", "postgres"):
            u = u.set(drivername="postgresql+psycopg")
        if not u.database:
            raise InvalidInput("store_url", f"name the database: {SUPPORTED}", redact(u))
    elif backend != "sqlite":
        raise InvalidInput("store_url", f"unsupported database {backend!r}; sdl runs on {SUPPORTED}", redact(u))
    return u


def is_sqlite(url: str | URL) -> bool:
    return parse_store_url(url).get_backend_name() == "sqlite"


def _sqlite_memory(u: URL) -> bool:
    return u.database in (None, "", ":memory:") or (u.query.get("mode") == "memory")


# ----------------------------------------------------------------------------- engines
def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    # WAL: readers (the API, `sdl campaign show`) never block the campaign's writes.
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def make_engine(url: str | URL, *, pool_size: int | None = None, max_overflow: int | None = None,
                pool_timeout: float | None = None) -> Engine:
    """The engine for a store URL (nothing connects yet; :func:`ensure_schema` does).

    Pool sizes apply to server databases and SQLite files; an in-memory SQLite
    database is one connection shared by all threads.
    """
    u = parse_store_url(url)
    kwargs: dict[str, Any] = {"json_serializer": json_dumps}
    if u.get_backend_name() == "sqlite":
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        if _sqlite_memory(u):
            kwargs["poolclass"] = StaticPool
        else:
            Path(u.database).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)
            kwargs.update({k: v for k, v in (("pool_size", pool_size), ("max_overflow", max_overflow),
                                              ("pool_timeout", pool_timeout)) if v is not None})
    else:
        kwargs.update(
            pool_pre_ping=True,
            pool_size=pool_size if pool_size is not None else 5,
            max_overflow=max_overflow if max_overflow is not None else 10,
            pool_timeout=pool_timeout if pool_timeout is not None else 30,
            connect_args={"connect_timeout": 10, "application_name": "sdl",
                          "options": "-c timezone=UTC"},
        )
    try:
        engine = create_engine(u, **kwargs)
    except (NoSuchModuleError, ImportError) as exc:
        raise InvalidInput("store_url", f"no driver for this URL ({exc}); use {SUPPORTED}", redact(u)) from None
    if u.get_backend_name() == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        event.listen(engine, "handle_error", _drop_connection_left_mid_query)
    return engine


# psycopg's words for a connection whose last query never finished (an exception landed
# inside the driver call): it can take no other statement, not even ROLLBACK, ever again.
_MID_QUERY = ("another command is already in progress", "can't change 'autocommit' now")


def _drop_connection_left_mid_query(ctx) -> None:
    """Treat a connection left mid-query as disconnected, so the pool replaces it.

    Otherwise the rollback on its way back fails, the connection is lost to the pool
    (or returned in that state and every later pre-ping raises) and a long-running
    worker or campaign slowly runs out of connections.
    """
    if any(m in str(ctx.original_exception) for m in _MID_QUERY):
        ctx.is_disconnect = True


def check_connection(engine: Engine) -> None:
    """Connect once; an unreachable database is a clear error naming ``store_url``."""
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except DBAPIError as exc:
        lines = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        reason = lines[0] if lines else type(exc).__name__
        raise DatabaseError(f"cannot open the database {redact(engine.url)}: {reason}") from exc


# --------------------------------------------------------------------------- migrations
_heads: tuple[str, ...] | None = None
_heads_lock = threading.Lock()
#: alembic runs env.py through a module-global context (``alembic.context``), so one
#: command at a time per process; processes are kept apart by the database's lock
alembic_lock = threading.RLock()


def alembic_config(url: str | URL | None = None) -> Any:
    """An alembic ``Config`` on the shipped script folder (no alembic.ini needed)."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if url is not None:
        cfg.set_main_option("sqlalchemy.url",
                            parse_store_url(url).render_as_string(hide_password=False).replace("%", "%%"))
    return cfg


def script_directory() -> Any:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config())


def head_revisions() -> tuple[str, ...]:
    """The newest revision(s) this sdl knows (read once per process)."""
    global _heads
    with _heads_lock:
        if _heads is None:
            _heads = tuple(sorted(script_directory().get_heads()))
        return _heads


def known_revisions() -> set[str]:
    """Every revision this sdl ships."""
    return {s.revision for s in script_directory().walk_revisions()}


def current_revisions(engine_or_conn: Engine | Connection) -> tuple[str, ...]:
    """The revision(s) the database is at; () for a database alembic never touched."""
    from alembic.runtime.migration import MigrationContext

    if isinstance(engine_or_conn, Engine):
        with engine_or_conn.connect() as conn:
            return current_revisions(conn)
    return tuple(sorted(MigrationContext.configure(engine_or_conn).get_current_heads()))


@contextmanager
def migration_connection(engine: Engine) -> Iterator[Connection]:
    """One connection in one transaction that no other migrator can enter at the same time.

    PostgreSQL: a transaction-scoped advisory lock (DDL is transactional there, so the
    whole upgrade commits or nothing does). SQLite file: a connection of its own that
    starts ``BEGIN IMMEDIATE`` (the database's write lock, for every process; DDL is
    transactional in SQLite too once pysqlite's own transaction handling is off),
    without ``foreign_keys`` so that batch table rebuilds in later revisions work.
    """
    u = engine.url
    if u.get_backend_name() == "postgresql":
        with engine.connect() as conn, conn.begin():
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
            yield conn
        return
    if _sqlite_memory(u):  # one shared connection: nobody else can be migrating
        with engine.connect() as conn, conn.begin():
            yield conn
        return
    mig = create_engine(u, poolclass=NullPool, json_serializer=json_dumps,
                        connect_args={"check_same_thread": False, "timeout": 30})

    @event.listens_for(mig, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # no implicit BEGIN/COMMIT from pysqlite
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    @event.listens_for(mig, "begin")
    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    try:
        with mig.connect() as conn, conn.begin():
            yield conn
    finally:
        mig.dispose()


def upgrade(engine: Engine, revision: str = "head") -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Migrate the database to ``revision`` under the migration lock; returns (before, after)."""
    from alembic import command

    with alembic_lock, migration_connection(engine) as conn:
        before = current_revisions(conn)
        cfg = alembic_config()
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
        after = current_revisions(conn)
    return before, after


def downgrade(engine: Engine, revision: str) -> None:
    """Migrate the database down to ``revision`` ("base": drop every sdl table)."""
    from alembic import command

    with alembic_lock, migration_connection(engine) as conn:
        cfg = alembic_config()
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, revision)


def ensure_schema(engine: Engine) -> None:
    """Bring the database to the newest schema; at once (one query) if it is there.

    Raises :class:`DatabaseError` (naming ``store_url``) when the database cannot be
    reached or is at a revision this sdl does not know (a newer sdl migrated it).
    """
    heads = head_revisions()
    try:
        current = current_revisions(engine)
    except DBAPIError:
        check_connection(engine)  # raises with the driver's reason
        raise
    if current == heads:
        return
    unknown = [r for r in current if r not in known_revisions()]
    if unknown:
        raise DatabaseError(
            f"the database {redact(engine.url)} is at schema revision {', '.join(unknown)}, which this sdl "
            f"does not know (it knows up to {', '.join(heads)}): a newer sdl migrated it; upgrade sdl")
    upgrade(engine)


# ------------------------------------------------------------- scratch databases (tests)
def _admin_engine(admin_url: str | URL) -> Engine:
    return create_engine(parse_store_url(admin_url), isolation_level="AUTOCOMMIT", poolclass=NullPool,
                         connect_args={"connect_timeout": 10, "application_name": "sdl-admin"})


def _admin_execute(admin_url: str | URL, statement: str) -> None:
    """One statement outside a transaction (CREATE/DROP DATABASE), on a connection of its own."""
    engine = _admin_engine(admin_url)
    try:
        with engine.connect() as conn:
            conn.execute(text(statement))
    finally:
        engine.dispose()


def create_database(admin_url: str | URL, name: str) -> str:
    """CREATE DATABASE ``name`` on the PostgreSQL server of ``admin_url``; returns its URL."""
    if not name.replace("_", "").isalnum():
        raise InvalidInput("name", "letters, digits and _ only", name)
    _admin_execute(admin_url, f'CREATE DATABASE "{name}"')
    return parse_store_url(admin_url).set(database=name).render_as_string(hide_password=False)


def drop_database(admin_url: str | URL, name: str) -> None:
    """DROP DATABASE ``name``, ending any connection still open to it."""
    _admin_execute(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


#: a PostgreSQL URL (any database on the server, e.g. .../postgres): the test suite then
#: makes a database of its own per test on that server instead of a SQLite file
TEST_DATABASE_ENV = "SDL_TEST_DATABASE_URL"
_scratch: dict[str, tuple[str, str]] = {}  # sqlite path -> (admin URL, database name)
_scratch_lock = threading.Lock()
_atexit_registered = False


def test_database_url() -> str | None:
    """``$SDL_TEST_DATABASE_URL`` when set: tests then run on PostgreSQL."""
    return os.environ.get(TEST_DATABASE_ENV) or None


def scratch_store_url(sqlite_path: str | Path) -> str:
    """A store URL for a test: the SQLite file ``sqlite_path``, or, with
    ``$SDL_TEST_DATABASE_URL`` set, a new empty PostgreSQL database on that server
    (``sdl_test_<random>``), the same one for the same path in this process. Such
    databases are dropped by :func:`drop_scratch_store`, or when the process exits."""
    global _atexit_registered
    path = Path(sqlite_path).expanduser().resolve()
    admin = test_database_url()
    if admin is None:
        return f"sqlite:///{path}"
    with _scratch_lock:
        if str(path) not in _scratch:
            name = f"sdl_test_{secrets.token_hex(6)}"
            create_database(admin, name)
            _scratch[str(path)] = (admin, name)
            if not _atexit_registered:
                atexit.register(drop_scratch_stores)
                _atexit_registered = True
        admin, name = _scratch[str(path)]
    return parse_store_url(admin).set(database=name).render_as_string(hide_password=False)


def drop_scratch_store(sqlite_path_or_url: str | Path) -> None:
    """Drop the scratch database of a path (or of its URL); nothing for SQLite files."""
    key = str(sqlite_path_or_url)
    with _scratch_lock:
        match = [k for k, (_, name) in _scratch.items()
                 if k == key or k == str(Path(key).expanduser().resolve()) or key.endswith(f"/{name}")]
        entries = [(_scratch.pop(k)) for k in match]
    for admin, name in entries:
        drop_database(admin, name)


def drop_scratch_stores() -> None:
    """Drop every scratch database this process made (registered with atexit)."""
    with _scratch_lock:
        entries = list(_scratch.values())
        _scratch.clear()
    for admin, name in entries:
        try:
            drop_database(admin, name)
        except Exception:  # noqa: BLE001 - the server may be gone at exit
            pass

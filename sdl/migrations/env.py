"""alembic environment for sdl: both metadata sets (the record's ``Base`` and the
service's ``ServiceBase``) in one history.

sdl runs this through :mod:`sdl.database`, which hands over a connection that is
already in a locked transaction (``config.attributes["connection"]``). Run from the
alembic command line instead, it connects to ``sqlalchemy.url`` itself.
"""

from __future__ import annotations

from alembic import context

from sdl.database import UTCDateTime, make_engine, migration_connection
from sdl.service.db import ServiceBase
from sdl.store import Base
from sdl.workflows.tables import WorkflowBase

config = context.config
target_metadata = [Base.metadata, ServiceBase.metadata, WorkflowBase.metadata]


def render_item(type_: str, obj, autogen_context):
    """Autogenerate writes plain SQLAlchemy types into revisions, not sdl's decorators."""
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def _configure(**kw) -> None:
    context.configure(
        target_metadata=target_metadata,
        render_as_batch=True,  # ALTER on SQLite by copying the table; plain ALTER on PostgreSQL
        compare_type=True,
        render_item=render_item,
        **kw,
    )


def run_offline() -> None:
    _configure(url=config.get_main_option("sqlalchemy.url"), literal_binds=True,
               dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection=connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = make_engine(config.get_main_option("sqlalchemy.url"))
    try:
        with migration_connection(engine) as connection:
            _configure(connection=connection)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()

"""``sdl db``: the store's schema (alembic migrations, see :mod:`sdl.database`).

Opening a store migrates it anyway; these commands do it on purpose (before a
deployment starts its processes) and tell where a database stands.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Optional

import typer

from sdl.cli.output import console, fail
from sdl.errors import InvalidInput, SdlError

db_app = typer.Typer(help="The store's schema: migrate it, or show its revision.", no_args_is_help=True)

STORE_OPTION = typer.Option(None, "--store", help="database URL: sqlite:///PATH or postgresql://USER@HOST/DB "
                                                  "(default $SDL_STORE_URL)")


def _url(store_url: Optional[str]) -> str:
    from sdl.config import get_settings

    return store_url or get_settings().store_url


def _engine(store_url: Optional[str]):
    from sdl.database import check_connection, make_engine

    engine = make_engine(_url(store_url))
    check_connection(engine)
    return engine


def _check_revision(revision: str) -> None:
    """Refuse a target alembic cannot resolve before the database is opened (alembic says
    it with a traceback: CommandError, or a bare AssertionError for ""). Relative targets
    ("+1", "head-1") depend on the database; alembic checks those."""
    from sdl.database import known_revisions, script_directory

    if re.fullmatch(r"\w*[+-]\d+", revision):
        return
    try:
        script_directory().get_revisions(revision)
    except Exception:  # noqa: BLE001 - alembic's CommandError / AssertionError: an unknown target
        allowed = ", ".join(repr(r) for r in sorted(known_revisions()))
        raise InvalidInput("--revision", f"allowed: 'head' (the newest), a revision id ({allowed}) "
                                          "or a step such as '+1'",
                           revision) from None


def _rev(revs: tuple[str, ...]) -> str:
    return ", ".join(revs) if revs else "none (empty database)"


@db_app.command("upgrade")
def db_upgrade(
    store_url: Optional[str] = STORE_OPTION,
    revision: str = typer.Option("head", help="target revision (default: the newest)"),
) -> None:
    """Migrate the store's database to the newest schema (or to --revision)."""
    from alembic.util.exc import CommandError

    from sdl.database import redact, upgrade

    try:
        _check_revision(revision)
        engine = _engine(store_url)
        try:
            before, after = upgrade(engine, revision)
        finally:
            engine.dispose()
    except CommandError as exc:  # a relative target past the newest or below the oldest
        fail(InvalidInput("--revision", str(exc), revision))
        return
    except SdlError as exc:
        fail(exc)
        return
    where = redact(_url(store_url))
    if before == after:
        console.print(f"{where}: at revision {_rev(after)} already, nothing to do")
    else:
        console.print(f"{where}: migrated from {_rev(before)} to {_rev(after)}")


@db_app.command("current")
def db_current(store_url: Optional[str] = STORE_OPTION) -> None:
    """Show the database's schema revision and the newest this sdl knows (exit 1 if they differ)."""
    from sdl.database import current_revisions, head_revisions, known_revisions, redact

    try:
        engine = _engine(store_url)
        try:
            current = current_revisions(engine)
        finally:
            engine.dispose()
    except SdlError as exc:
        fail(exc)
        return
    heads = head_revisions()
    console.print(f"database: {redact(_url(store_url))}")
    console.print(f"revision: {_rev(current)}")
    console.print(f"newest:   {_rev(heads)}")
    if current == heads:
        console.print("up to date")
    else:
        console.print("[yellow]behind[/]: run `sdl db upgrade` (opening the store also migrates it)"
                      if set(current) <= known_revisions() else "[red]unknown revision[/]: a newer sdl migrated it")
        raise typer.Exit(1)


def new_revision(message: str, autogenerate: bool = True) -> Path:
    """Write ``sdl/migrations/versions/NNNN_<slug>.py`` (NNNN: the next number). With
    ``autogenerate``, alembic fills it with what the models have that the newest
    revision lacks (compared on a scratch SQLite database at head); review it."""
    from alembic import command

    from sdl.database import MIGRATIONS, alembic_config, alembic_lock, make_engine, script_directory, upgrade

    numbers = [int(r.revision) for r in script_directory().walk_revisions() if r.revision.isdigit()]
    rev_id = f"{max(numbers, default=0) + 1:04d}"
    slug = re.sub(r"[^a-z0-9]+", "_", message.lower()).strip("_") or "revision"
    if len(slug) > 40:  # whole words
        slug = slug[:41].rsplit("_", 1)[0]
    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(f"sqlite:///{tmp}/reference.sqlite")
        try:
            upgrade(engine)
            cfg = alembic_config()
            cfg.set_main_option("file_template", f"%%(rev)s_{slug}")
            with alembic_lock, engine.connect() as conn:
                cfg.attributes["connection"] = conn
                command.revision(cfg, message=message, autogenerate=autogenerate, rev_id=rev_id)
        finally:
            engine.dispose()
    return MIGRATIONS / "versions" / f"{rev_id}_{slug}.py"


@db_app.command("revision")
def db_revision(
    message: str = typer.Option(..., "-m", "--message", help="what the revision changes"),
    autogenerate: bool = typer.Option(True, "--autogenerate/--empty",
                                      help="fill it from the models (default) or leave it empty"),
) -> None:
    """For developers: write a new migration revision after changing a model."""
    path = new_revision(message, autogenerate)
    console.print(f"wrote {path}; review it, then run the tests (tests/test_migrations.py)")

"""``sdl export nexus``: a run or a campaign of the store as a NeXus/HDF5 file."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

import typer

from sdl.cli.output import console, fail

export_app = typer.Typer(help="Export runs and campaigns in formats other tools read.", no_args_is_help=True)


def _check_out(target: Path) -> None:
    """Say a file that cannot be written (a folder, a missing folder) naming -o/--out,
    before anything is read or written (nexusformat would raise NeXusError)."""
    from sdl.errors import InvalidInput

    if target.is_dir():
        fail(InvalidInput("-o/--out", "is a folder; give a file to write, e.g. DIR/export.nxs", str(target)))
    if not target.parent.is_dir():
        fail(InvalidInput("-o/--out", f"folder {str(target.parent)!r} does not exist", str(target)))


def _default_name(ident: str) -> Path:
    """``<id>.nxs`` in the current folder: an id's characters other than letters, digits,
    '_' and '-' become '_', so no id can name a path elsewhere."""
    return Path(re.sub(r"[^A-Za-z0-9_-]", "_", ident) + ".nxs")


@export_app.command("nexus")
def export_nexus(
    campaign: Optional[str] = typer.Option(None, "--campaign", help="campaign id: one NXentry per run"),
    run: Optional[str] = typer.Option(None, "--run", help="run uid: one NXentry"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="file to write (default <id>.nxs)"),
    store_url: Optional[str] = typer.Option(None, "--store", help="SQLAlchemy URL (default $SDL_STORE_URL)"),
    check: bool = typer.Option(True, "--validate/--no-validate", help="check the file with nxvalidate"),
) -> None:
    """Write a NeXus/HDF5 file (nexusformat) from the store's documents, and check it."""
    from sdl import tables
    from sdl.config import get_settings
    from sdl.data_views import nexus
    from sdl.errors import InvalidInput, SdlError
    from sdl.store import Store

    if (campaign is None) == (run is None):
        fail("give exactly one of --campaign or --run")
    if out is not None:
        _check_out(out)
    try:
        store = Store(store_url or get_settings().store_url)
    except SdlError as exc:  # not a database URL: said, not a traceback
        fail(exc)
    try:
        if campaign is not None:
            campaign = tables.campaign_id(store, campaign)  # a unique prefix will do
        target = out or _default_name(campaign or run)  # type: ignore[arg-type]
        _check_out(target)
        try:
            if campaign is not None:
                nexus.write_campaign(store, campaign, target)
            else:
                nexus.write_run(store, run, target)  # type: ignore[arg-type]
        except (OSError, nexus._nx().NeXusError) as exc:  # no permission, a full disk
            raise InvalidInput("-o/--out", f"cannot write: {exc}", str(target)) from None
    except SdlError as exc:
        fail(exc)
    finally:
        store.close()
    console.print(f"wrote {target}")
    if check:
        result = nexus.validate(target)
        for level, msg in result["messages"][:20]:
            console.print(f"  {level}: {msg}")
        console.print(f"nxvalidate: {result['errors']} errors, {result['warnings']} warnings")
        if result["errors"]:
            raise typer.Exit(1)

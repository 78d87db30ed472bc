"""``sdl export nexus``: a run or a campaign of the store as a NeXus/HDF5 file."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

console = Console()
err_console = Console(stderr=True)

export_app = typer.Typer(help="Export runs and campaigns in formats other tools read.", no_args_is_help=True)


def _fail(msg: object, code: int = 2) -> None:
    err_console.print(f"[bold red]error[/]: {msg}")
    raise typer.Exit(code)


@export_app.command("nexus")
def export_nexus(
    campaign: Optional[str] = typer.Option(None, "--campaign", help="campaign id: one NXentry per run"),
    run: Optional[str] = typer.Option(None, "--run", help="run uid: one NXentry"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="file to write (default <id>.nxs)"),
    store_url: Optional[str] = typer.Option(None, "--store", help="SQLAlchemy URL (default $SDL_STORE_URL)"),
    check: bool = typer.Option(True, "--validate/--no-validate", help="check the file with nxvalidate"),
) -> None:
    """Write a NeXus/HDF5 file (nexusformat) from the store's documents, and check it."""
    from sdl.config import get_settings
    from sdl.data_views import nexus
    from sdl.errors import SdlError
    from sdl.store import Store

    if (campaign is None) == (run is None):
        _fail("give exactly one of --campaign or --run")
    store = Store(store_url or get_settings().store_url)
    try:
        target = Path(out or f"{campaign or run}.nxs")
        if campaign is not None:
            nexus.write_campaign(store, campaign, target)
        else:
            nexus.write_run(store, run, target)  # type: ignore[arg-type]
    except SdlError as exc:
        _fail(exc)
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

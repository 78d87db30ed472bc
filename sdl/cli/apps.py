"""The ``sdl`` app and its ``campaign`` group; the command modules add their commands to them."""

from __future__ import annotations

import typer


def _after_command(*_: object, **__: object) -> None:
    """A command has finished and the process is about to exit: stop CA callback threads
    first (see stop_ca_callbacks). Only in the ``sdl`` process itself, not when a test
    runs the app in its own process (the test goes on using ophyd)."""
    import sys
    from pathlib import Path

    entry = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if entry is not None and (entry.name == "sdl" or entry.resolve() == (Path(__file__).parent / "__main__.py").resolve()):
        from sdl.ca_env import stop_ca_callbacks

        stop_ca_callbacks()


app = typer.Typer(help="sdl: self-driving-lab orchestration.", no_args_is_help=True, add_completion=False,
                  result_callback=_after_command)
campaign_app = typer.Typer(help="Create, run, resume and inspect campaigns.", no_args_is_help=True)
app.add_typer(campaign_app, name="campaign")

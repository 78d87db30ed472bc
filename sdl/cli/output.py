"""What every ``sdl`` command shares: the consoles, one error line and exit 2, the store,
quiet libraries and the campaign progress bar."""

from __future__ import annotations

import logging
from typing import NoReturn, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from sdl.errors import DeviceFault, SdlError

console = Console()
err_console = Console(stderr=True)


class _NoAbortTraceback(logging.Filter):
    """Ctrl-C aborts the run on purpose: bluesky's ``Run aborted`` with the plan's whole
    traceback (``RequestAbort``) is no error to show; the CLI says how to resume instead.
    A device that reports a fault (the robot made no sample) is an experiment's outcome,
    recorded as data: the campaign's one line says it, not the plan's traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[0] if record.exc_info else None
        if exc is not None and exc.__name__ == "RequestAbort":
            return False
        # a device's fault: the campaign's own one-line warning ("experiment N failed: ...") says it
        return not (record.exc_info and _device_fault(record.exc_info[1]) is not None)


def _device_fault(exc: BaseException | None) -> DeviceFault | None:
    """The :class:`DeviceFault` behind ``exc`` (ophyd wraps it in a ``FailedStatus``)."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, DeviceFault):
            return exc
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return None


def quiet_libraries() -> None:
    """Warnings and errors only, from sdl; the libraries' chatter off."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for name in ("ax", "botorch", "bluesky", "ophyd", "caproto", "matplotlib"):
        logging.getLogger(name).setLevel(logging.ERROR)
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, _NoAbortTraceback) for f in handler.filters):
            handler.addFilter(_NoAbortTraceback())
    import warnings

    warnings.filterwarnings("ignore")


def fail(exc: object, code: int = 2) -> NoReturn:
    """One ``error:`` line (an SdlError names its field) and exit ``code`` (2: bad input)."""
    from rich.markup import escape

    err_console.print(f"[bold red]error[/]: {escape(str(exc))}")  # a column named "[A]" is text, not markup
    raise typer.Exit(code)


def open_store(url: Optional[str]):
    """The store at ``url`` (default ``$SDL_STORE_URL``); a bad URL or a file that is no database is said."""
    from sdl.config import get_settings
    from sdl.store import Store

    try:
        return Store(url or get_settings().store_url)
    except SdlError as exc:  # not a database URL, a file that is not a database: said, not a traceback
        fail(exc)

class RichProgress:
    """Campaign progress drawn as a rich progress bar."""

    def __init__(self, progress: Progress, label: str, objective: str):
        self.p = progress
        self.label = label
        self.objective = objective
        self.task = None

    def started(self, total: int, done: int) -> None:
        self.task = self.p.add_task(self.label, total=total, completed=done, best="-")

    def experiment_done(self, done, total, observation, best) -> None:
        best_s = "-" if best is None else f"{best:.4g}"
        self.p.update(self.task, completed=done, best=best_s)


def progress_bar() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("best {task.fields[best]}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )

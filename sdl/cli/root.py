"""The ``sdl`` app put together: every command group registered, ``--profile`` last."""

from __future__ import annotations

from sdl.cli import campaigns, lab  # noqa: F401  (their commands register on the app as they load)
from sdl.cli.apps import app, campaign_app
from sdl.cli.db import db_app
from sdl.cli.instruments import register as _register_instruments
from sdl.cli.service import register as _register_service
from sdl.data_views.cli import export_app
from sdl.workflows.cli import workflow_app

_register_service(app, campaign_app)  # sdl serve, sdl worker, sdl submit, sdl campaign create|watch
app.add_typer(db_app, name="db")  # sdl db upgrade | current | revision
app.add_typer(workflow_app, name="workflow")  # sdl workflow ...
app.add_typer(export_app, name="export")  # sdl export nexus
_register_instruments(app)  # sdl instruments ..., and --profile on every command: keep this last


def main() -> None:  # pragma: no cover
    app(prog_name="sdl")

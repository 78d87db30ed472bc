"""The ``sdl`` command line (typer): one app, one module per group of commands.

- :mod:`sdl.cli.app`: the ``sdl`` app and its ``campaign`` group
- :mod:`sdl.cli.output`: what every command shares (consoles, ``fail``, the store, the progress bar)
- :mod:`sdl.cli.lab`: ``sdl demo``, ``sdl ioc``, ``sdl bench``
- :mod:`sdl.cli.campaigns`: ``sdl campaign run|resume|list|show|replay`` (in this process)
- :mod:`sdl.cli.service`: ``sdl serve``, ``worker``, ``submit``, ``campaign create|watch`` (the HTTP service)
- :mod:`sdl.cli.db`: ``sdl db upgrade|current|revision``
- :mod:`sdl.cli.instruments`: ``sdl instruments list|show|check`` and ``--profile`` on every command

``sdl workflow`` and ``sdl export`` live with what they drive (:mod:`sdl.workflows.cli`,
:mod:`sdl.data_views.cli`) and are added here. Long work shows a progress bar (rich).
"""

from __future__ import annotations

from sdl.cli import campaigns, lab  # noqa: F401  (their commands register on the app as they load)
from sdl.cli.app import app, campaign_app
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

__all__ = ["app", "main"]


def main() -> None:  # pragma: no cover
    app(prog_name="sdl")

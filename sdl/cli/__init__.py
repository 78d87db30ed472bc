"""The ``sdl`` command line (typer): one app, one module per group of commands.

- :mod:`sdl.cli.apps`: the ``sdl`` app and its ``campaign`` group
- :mod:`sdl.cli.output`: what every command shares (consoles, ``fail``, the store, the progress bar)
- :mod:`sdl.cli.lab`: ``sdl demo``, ``sdl ioc``, ``sdl bench``
- :mod:`sdl.cli.campaigns`: ``sdl campaign run|resume|list|show|replay`` (in this process)
- :mod:`sdl.cli.service`: ``sdl serve``, ``worker``, ``submit``, ``campaign create|watch`` (the HTTP service)
- :mod:`sdl.cli.db`: ``sdl db upgrade|current|revision``
- :mod:`sdl.cli.instruments`: ``sdl instruments list|show|check`` and ``--profile`` on every command

``sdl workflow`` and ``sdl export`` live with what they drive (:mod:`sdl.workflows.cli`,
:mod:`sdl.data_views.cli`). :mod:`sdl.cli.root` puts all of them together, and ``from sdl.cli
import app`` gets that, so a command module elsewhere can use :mod:`sdl.cli.output` without
loading every other command first. Long work shows a progress bar (rich).
"""

from __future__ import annotations

from typing import Any

__all__ = ["app", "main"]


def __getattr__(name: str) -> Any:
    """``app`` and ``main`` from :mod:`sdl.cli.root`, put together on first use."""
    if name in __all__:
        from sdl.cli import root

        return getattr(root, name)
    raise AttributeError(f"module 'sdl.cli' has no attribute {name!r}")

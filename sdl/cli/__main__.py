"""``python -m sdl.cli``: the ``sdl`` command."""

from sdl.cli import main

main()

"""``python -m sdl.cli``: the ``sdl`` command."""

from sdl.cli.root import main

main()

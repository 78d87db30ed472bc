"""Every command's --help shows its options' help whole: rich reads ``[word]`` as markup and
drops it (``pip install 'sdl[tiled]'`` became ``pip install 'sdl'``) unless it is escaped."""

from __future__ import annotations

import re

import typer
from typer.testing import CliRunner

from sdl.cli import app


def _commands(group, path: tuple[str, ...] = ()):
    yield path, group
    if hasattr(group, "commands"):  # a group (typer carries its own click)
        for name, sub in group.commands.items():
            yield from _commands(sub, (*path, name))


def test_bracketed_words_in_option_help_reach_the_screen():
    root = typer.main.get_command(app)
    runner = CliRunner()
    checked = 0
    for path, cmd in _commands(root):
        wanted = [m for p in cmd.params for m in re.findall(r"\[[A-Za-z][^\]\s]*\]", getattr(p, "help", None) or "")]
        if not wanted:
            continue
        res = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "400"})
        assert res.exit_code == 0, res.output
        for word in wanted:
            assert word in res.output, f"sdl {' '.join(path)} --help lost {word!r}"
            checked += 1
    assert checked >= 1  # sdl serve --tiled names the 'sdl[tiled]' extra

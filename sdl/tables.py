"""CLI tables staff can copy from, and ids given by a unique prefix (as git does).

- :func:`print_rows`: a table whose identifier columns (PV names, ids) are printed whole
  at any terminal width (only free-text columns wrap; when even the whole columns do not
  fit, each row is printed as ``key: value`` lines), or the rows as JSON (``--json``).
- :func:`resolve_prefix`: the one id that starts with what was typed; an exact match
  wins; none or several is a clear error naming the matches.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

from rich.console import Console
from rich.table import Table
from rich.text import Text

from sdl.errors import InvalidInput

#: cells up to this long are never wrapped (status words, counts, units)
SHORT = 12
#: the narrowest a wrapping (free-text) column may get before the list layout is used
MIN_TEXT = 8


@dataclass(frozen=True)
class Col:
    """A table column: ``key`` in each row, ``header`` shown, ``whole`` never wrapped."""

    key: str
    header: str = ""
    whole: bool = False

    @property
    def title(self) -> str:
        return self.header or self.key


#: ``sdl campaign list``
CAMPAIGN_COLUMNS = (Col("id", whole=True), Col("name"), Col("instrument", whole=True), Col("agent", whole=True),
                    Col("status", whole=True), Col("done", whole=True))
#: ``sdl ioc`` / ``sdl ioc --list``
PV_COLUMNS = (Col("name", "PV", whole=True), Col("ioc", "IOC", whole=True), Col("type", whole=True),
              Col("access"), Col("units"), Col("doc", "what"))


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def print_rows(console: Console, columns: Sequence[Col], rows: Iterable[dict], *, as_json: bool = False,
               title: str | None = None) -> None:
    """Print ``rows`` as a table (identifier columns whole) or, with ``as_json``, as JSON."""
    rows = list(rows)
    if as_json:
        # print, not console.print: no wrapping, no markup, pipeable to jq
        print(json.dumps(rows, default=str))
        return
    cells = [[_cell(r.get(c.key)) for c in columns] for r in rows]
    widths = [max([len(c.title)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    whole = [c.whole or widths[i] <= SHORT for i, c in enumerate(columns)]
    # no box, collapsed padding: 1 character between columns, none at the edges
    needed = sum(w if whole[i] else min(w, MIN_TEXT) for i, w in enumerate(widths)) + len(columns) - 1
    if needed > console.width:
        _print_records(console, columns, cells, title)
        return
    table = Table(title=title, box=None, pad_edge=False, collapse_padding=True, header_style="bold underline")
    for i, c in enumerate(columns):
        if whole[i]:
            table.add_column(Text(c.title), no_wrap=True, min_width=widths[i], overflow="ignore")
        else:
            table.add_column(Text(c.title), overflow="fold", ratio=1)
    for row in cells:  # Text: no markup, no emoji (":RING:" is a PV name, not a ring)
        table.add_row(*(Text(v) for v in row))
    console.print(table, soft_wrap=False)


def _print_records(console: Console, columns: Sequence[Col], cells: list[list[str]], title: str | None) -> None:
    """One block per row, ``key: value`` per line, so long identifiers stay whole."""
    if title:
        console.print(title, markup=False, highlight=False, emoji=False)
    pad = max(len(c.title) for c in columns)
    for n, row in enumerate(cells):
        if n:
            console.print("", soft_wrap=True)
        for c, v in zip(columns, row):
            console.print(f"{c.title:>{pad}}: {v}", markup=False, highlight=False, emoji=False, soft_wrap=True)


def resolve_prefix(prefix: str, ids: Iterable[str], *, field: str = "id", what: str = "item") -> str:
    """The id in ``ids`` that ``prefix`` names: itself, or the only one starting with it.

    Raises :class:`InvalidInput` (naming ``field``) when none matches or several do.
    """
    ids = list(ids)
    if prefix in ids:
        return prefix
    if not prefix:
        raise InvalidInput(field, f"an {what} id or a unique prefix of one", prefix)
    matches = sorted(i for i in ids if i.startswith(prefix))
    if len(matches) == 1:
        return matches[0]
    if not matches:
        recent = ids[-5:]
        raise InvalidInput(field, f"no {what} id starts with this; recent: {recent}", prefix)
    shown = matches[:10] + ([f"... {len(matches) - 10} more"] if len(matches) > 10 else [])
    raise InvalidInput(field, f"ambiguous prefix: {len(matches)} {what}s match: {shown}", prefix)


def campaign_id(store: Any, prefix: str) -> str:
    """A stored campaign's full id from a unique prefix (``sdl campaign resume a04a85ff``)."""
    return resolve_prefix(prefix, [row.id for row in store.campaigns()], field="campaign_id", what="campaign")


def resolve_with(lister: Callable[[], Iterable[dict]], prefix: str, *, key: str = "id",
                 field: str = "campaign_id", what: str = "campaign") -> str:
    """As :func:`resolve_prefix`, over records listed by ``lister`` (e.g. over HTTP)."""
    return resolve_prefix(prefix, [str(r[key]) for r in lister()], field=field, what=what)


__all__ = ["CAMPAIGN_COLUMNS", "Col", "PV_COLUMNS", "campaign_id", "print_rows", "resolve_prefix", "resolve_with"]

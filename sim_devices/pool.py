"""Pool-based materials model: a table of real measurements, where only listed points exist.

An agent may only "make" a point that is in the table, and the measured values are the
table's. Any CSV is a pool (:meth:`PoolModel.from_csv`):

- input columns are *continuous* (numbers), *integer* (whole numbers) or *categorical*
  (anything else: names, SMILES strings; or numeric columns named in ``categorical``);
  a numeric column with few distinct levels is kept numeric (its order means something)
  and said so in :attr:`PoolModel.notes`;
- a column with a single value is not an input (nothing to choose) and is said so; so is
  a text column with a different label on every row (a sample id), a column of dates or
  times, and any column named in ``ignore_columns``;
- a byte-order mark is ignored, blank lines and a repeated header line are skipped; a
  file whose header has no comma but semicolons (or tabs) is read with that separator,
  and with ';' decimal commas (``1,5``) are read as numbers (said in the notes);
- rows that repeat a point are averaged into one point (the datasets' READMEs ask for
  that or for noisy repeats; averaging keeps "a point is measured once" true), and
  :attr:`PoolModel.repeats` counts them;
- one or several objective columns, each to maximise or minimise; a row without a value
  of an objective is dropped (and counted in the notes); text in an objective column is
  an error unless ``objective_levels`` orders its labels (an ordinal score).

Categorical values are kept as their labels in every point a user or an agent sees;
:attr:`points` holds numbers (a categorical input's code is the index of its label in
:attr:`InputColumn.levels`) so the simulated robot can carry them as a vector.

The bundled tables come from Liang et al., npj Comput. Mater. 7, 188 (2021),
repository PV-Lab/Benchmarking, MIT licence (``sdl/data/LICENSE-PV-Lab-Benchmarking``),
and from Olympus (Häse et al. 2021, MIT licence, ``sdl/data/olympus/LICENSE-olympus``).
"""

from __future__ import annotations

import csv
import io
import math
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Literal, Mapping, Sequence

import numpy as np

from sdl.errors import InvalidInput
from sdl.space import ChoiceParameter, Objective, RangeParameter, SearchSpace

#: A numeric input with at most this many distinct values (and at least 3 rows per value)
#: is reported as "few levels" (kept numeric and ordered; name it in ``categorical`` to
#: treat it as categories).
FEW_LEVELS = 6

#: A text column with a different label on each of at least this many rows is an identifier
#: (a sample id), not an input, unless ``input_columns`` names it.
ID_MIN_ROWS = 10

_DIRECTIONS = {"max": "maximize", "maximize": "maximize", "maximise": "maximize",
               "min": "minimize", "minimize": "minimize", "minimise": "minimize"}
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}([ T]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?)?$")
_DECIMAL_COMMA = re.compile(r"^[+-]?\d*,\d+([eE][+-]?\d+)?$")
_SMILES = re.compile(r"^[A-Za-z0-9@+\-\[\]\(\)=#$/\\%.:*]+$")


def _slug(column: str) -> str:
    """'P3HT content (%)' -> 'p3ht_content': parameter names safe for Ax and URLs."""
    head = column.split("(")[0].strip().lower()
    out = "".join(ch if ch.isalnum() else "_" for ch in head).strip("_")
    while "__" in out:
        out = out.replace("__", "_")
    return out or "x"


def parse_objective(text: str) -> tuple[str, str]:
    """'COLUMN[:min|max]' -> (column, 'maximize' | 'minimize'); maximise when not said."""
    if not isinstance(text, str) or not text.strip():
        raise InvalidInput("objective", "give a column name, optionally with ':min' or ':max'", text)
    col, sep, tail = text.rpartition(":")
    if sep and tail.strip().lower() in _DIRECTIONS:
        return col.strip(), _DIRECTIONS[tail.strip().lower()]
    if sep and tail.strip().lower() and not col:
        raise InvalidInput("objective", "give a column name before ':'", text)
    return text.strip(), "maximize"


def _delimiter(text: str) -> str:
    """',' unless the header line has none and has ';' or tabs (spreadsheets of many locales
    export ';'-separated CSV)."""
    header = next((line for line in text.splitlines() if line.strip()), "")
    if "," in header:
        return ","
    counts = {d: header.count(d) for d in (";", "\t")}
    best = max(counts, key=counts.get)
    return best if counts[best] else ","


def _read_rows(path: str | Path) -> tuple[list[list[str]], str]:
    """Every row of a CSV table and its separator (utf-8-sig: a byte-order mark is dropped;
    read through StringIO, so a quoted cell keeps its newlines)."""
    with open(path, newline="", encoding="utf-8-sig") as fh:
        text = fh.read()
    delimiter = _delimiter(text)
    return list(csv.reader(io.StringIO(text), delimiter=delimiter)), delimiter


def table_header(path: str | Path) -> list[str] | None:
    """The column names of a CSV table, read as :meth:`PoolModel.from_csv` reads it, or None
    when the file cannot be read."""
    try:
        rows, _ = _read_rows(path)
    except (OSError, UnicodeDecodeError, csv.Error):
        return None
    return [h.strip() for h in rows[0]] if rows else []


def _number(cell: str) -> float | None:
    try:
        v = float(cell)
    except ValueError:
        return None
    return v


def _looks_like_smiles(levels: Sequence[str]) -> bool:
    return all(_SMILES.match(v) and " " not in v for v in levels) and any(
        any(ch in v for ch in "()=#[]") for v in levels)


@dataclass
class InputColumn:
    """How one CSV column became a search dimension."""

    name: str  # the parameter name (a slug of the header)
    column: str  # the header as written
    kind: Literal["continuous", "integer", "categorical"]
    levels: list[str] | None = None  # categorical: the labels, in code order
    distinct: int = 0  # how many distinct values the pool has

    def describe(self) -> str:
        if self.kind == "categorical":
            return f"{self.column!r}: categorical, {self.distinct} levels"
        return f"{self.column!r}: {self.kind}, {self.distinct} distinct values"


@dataclass
class PoolModel:
    """A finite set of measurable points with measured values of one or more objectives."""

    name: str
    inputs: list[str]  # parameter names (slugs)
    input_columns: list[str]  # original column headers
    objective: Objective  # the first objective (kept for one-objective code)
    objective_column: str
    points: np.ndarray  # (n, d), unique input rows (categorical inputs as codes)
    values: np.ndarray  # (n,), the first objective: mean of the repeats
    repeats: np.ndarray  # (n,), number of rows averaged
    source: str = ""
    units: dict[str, str] = field(default_factory=dict)
    objectives: list[Objective] = field(default_factory=list)
    objective_columns: list[str] = field(default_factory=list)
    all_values: np.ndarray | None = None  # (n, m): every objective, mean of the repeats
    columns: list[InputColumn] = field(default_factory=list)
    #: What loading decided and why (few-level columns, dropped rows, repeats averaged).
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.objectives:
            self.objectives = [self.objective]
            self.objective_columns = [self.objective_column]
        if self.all_values is None:
            self.all_values = np.asarray(self.values, dtype=float).reshape(-1, 1)
        if not self.columns:
            self.columns = [InputColumn(n, c, "continuous", None, len(set(self.points[:, j].tolist())))
                            for j, (n, c) in enumerate(zip(self.inputs, self.input_columns))]
        self._keys: dict[tuple, int] | None = None

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_csv(
        cls,
        path: str | Path,
        objective_column: str | None = None,
        direction: Literal["maximize", "minimize"] | None = None,
        *,
        objectives: Sequence[str | tuple[str, str]] | None = None,
        name: str | None = None,
        objective_name: str | None = None,
        input_columns: Sequence[str] | None = None,
        categorical: Sequence[str] = (),
        objective_levels: Mapping[str, Sequence[str]] | None = None,
        ignore_columns: Sequence[str] = (),
    ) -> "PoolModel":
        """Read a CSV table. Objectives: ``objective_column`` + ``direction``, or
        ``objectives``, each ``"COLUMN[:min|max]"`` or ``(column, direction)``. Inputs: every
        other column unless ``input_columns`` names them, less ``ignore_columns`` (notes,
        operators, other measured quantities), less any text column with a different label
        on every row (a sample id: one-hot it would teach the model nothing, and it would
        keep repeats of a point apart) and any column of ISO dates or times (said in the
        notes); ``categorical`` forces numeric columns to be categories;
        ``objective_levels`` maps an objective column of ordered labels (worst first) to
        0, 1, 2, ..."""
        path = Path(path)
        if not path.is_file():
            raise InvalidInput("pool", "no such file", str(path))
        specs: list[tuple[str, str]] = []
        if objective_column is not None:
            specs.append((objective_column, direction or "maximize"))
        for o in objectives or []:
            specs.append(parse_objective(o) if isinstance(o, str) else (str(o[0]), _DIRECTIONS.get(str(o[1]), "")))
        if not specs:
            raise InvalidInput("objective", f"name at least one objective column of {path.name}")
        for col, d in specs:
            if d not in ("maximize", "minimize"):
                raise InvalidInput("objective", f"direction of {col!r} must be 'min' or 'max'", d)
        notes: list[str] = []
        try:
            rows, delimiter = _read_rows(path)
        except UnicodeDecodeError as exc:
            raise InvalidInput("pool", f"{path.name} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
        except csv.Error as exc:
            raise InvalidInput("pool", f"{path.name} cannot be read as CSV: {exc}") from None
        rows = [r for r in rows if any(c.strip() for c in r)]
        if delimiter != ",":
            said = {";": "';'", "\t": "tab"}[delimiter]
            commas = 0
            if delimiter == ";":  # a spreadsheet of a locale that writes 1,5 for 1.5
                for r in rows[1:]:
                    for k, c in enumerate(r):
                        if _DECIMAL_COMMA.match(c.strip()):
                            r[k], commas = c.strip().replace(",", "."), commas + 1
            notes.append(f"read as {said}-separated" + (f", {commas} decimal comma(s) read as points" if commas
                                                         else ""))
        if len(rows) < 2:
            raise InvalidInput("pool", f"{path.name} needs a header and at least one row")
        header = [h.strip() for h in rows[0]]
        dup = sorted({h for h in header if header.count(h) > 1})
        if dup:
            raise InvalidInput("pool", f"{path.name} repeats column(s) {dup}")
        body: list[tuple[int, list[str]]] = []
        for line, r in enumerate(rows[1:], start=2):
            cells = [c.strip() for c in r]
            if cells == header:
                notes.append(f"line {line} repeats the header: skipped")
                continue
            if len(cells) != len(header):
                raise InvalidInput("pool", f"{path.name} line {line} has {len(cells)} cells, the header "
                                   f"{len(header)}")
            body.append((line, cells))
        ocols = [c for c, _ in specs]
        for c in ocols:
            if c not in header:
                head, sep, tail = c.rpartition(":")
                if sep and head.strip() in header:
                    raise InvalidInput("objective", f"{tail.strip()!r} after {head.strip()!r} is not a direction; "
                                       "allowed: 'min', 'max' (or nothing: maximise)", c)
                raise InvalidInput("objective", f"{c!r} is not a column of {path.name}; columns: {header}", c)
        if len(set(ocols)) != len(ocols):
            raise InvalidInput("objective", "an objective column is named twice", ocols)
        for field_, names in (("ignore_columns", ignore_columns), ("input_columns", input_columns or ())):
            for c in names:
                if c not in header:
                    raise InvalidInput(field_, f"{c!r} is not a column of {path.name}; columns: {header}", c)
                if c in ocols:
                    raise InvalidInput(field_, f"{c!r} is an objective", c)
        ignored = list(ignore_columns)
        if ignored and input_columns:
            raise InvalidInput("ignore_columns", "give input_columns (the inputs) or ignore_columns (every other "
                               "column is an input), not both", ignored)
        if input_columns:
            cols = list(input_columns)
        else:
            cols = [c for c in header if c not in ocols and c not in ignored]
            if ignored:
                notes.append(f"not inputs (ignore_columns): {ignored}")
        for c in categorical:
            if c not in cols:
                raise InvalidInput("categorical", f"{c!r} is not an input column of {path.name}; inputs: {cols}", c)
        if not cols:
            raise InvalidInput("input_columns", f"{path.name} has no input column besides the objectives")

        # objectives: numbers (or ordered labels); rows without a value are dropped
        levels_of = {k: list(v) for k, v in (objective_levels or {}).items()}
        oidx = [header.index(c) for c in ocols]
        kept: list[tuple[int, list[str], list[float]]] = []
        dropped = {c: 0 for c in ocols}
        for line, cells in body:
            vals: list[float] = []
            for c, i in zip(ocols, oidx):
                cell = cells[i]
                if c in levels_of:
                    if cell == "":
                        v = math.nan
                    elif cell not in levels_of[c]:
                        raise InvalidInput("objective", f"column {c!r} line {line}: {cell!r} is not one of the "
                                           f"ordered levels {levels_of[c]}", cell)
                    else:
                        v = float(levels_of[c].index(cell))
                else:
                    v = _number(cell) if cell.lower() not in ("", "nan", "na", "n/a") else math.nan
                    if v is None:
                        raise InvalidInput("objective", f"column {c!r} cannot be read: line {line} holds {cell!r}, "
                                           "not a number (give objective_levels to rank text labels)", cell)
                vals.append(v)
            bad = [c for c, v in zip(ocols, vals) if not math.isfinite(v)]
            for c in bad:
                dropped[c] += 1
            if not bad:
                kept.append((line, cells, vals))
        for c, k in dropped.items():
            if k:
                notes.append(f"{k} row(s) without a value of {c!r}: dropped")
        if not kept:
            raise InvalidInput("objective", f"no row of {path.name} has a value of every objective", ocols)

        # inputs: numeric, integer, or categorical
        columns: list[InputColumn] = []
        codes: list[list[float]] = []
        identifiers: list[str] = []
        for c in cols:
            i = header.index(c)
            cells = [cells_[i] for _, cells_, _ in kept]
            missing = [line for (line, _, _), cell in zip(kept, cells) if cell == ""]
            if missing:
                raise InvalidInput("input_columns", f"column {c!r} cannot be read: empty at line(s) "
                                   f"{missing[:5]}{' ...' if len(missing) > 5 else ''}", c)
            nums = [_number(x) for x in cells]
            n_num = sum(v is not None for v in nums)
            slug = _slug(c)
            if c in categorical or n_num < len(cells):
                if c not in categorical and n_num >= 0.9 * len(cells):
                    bad = [(line, x) for (line, _, _), x, v in zip(kept, cells, nums) if v is None]
                    raise InvalidInput("input_columns", f"column {c!r} cannot be read: {n_num} of {len(cells)} "
                                       f"values are numbers but line {bad[0][0]} holds {bad[0][1]!r}; fix the "
                                       "value, or name the column in categorical to treat it as categories", c)
                labels = list(dict.fromkeys(cells))
                if (not input_columns and c not in categorical and n_num == 0 and len(cells) >= ID_MIN_ROWS
                        and len(labels) == len(cells)):
                    identifiers.append(c)
                    notes.append(f"column {c!r}: a different label on every row (an identifier, e.g. "
                                 f"{cells[0]!r}): not an input (name it in input_columns to make it one)")
                    continue
                if not input_columns and c not in categorical and all(_DATE.match(x) for x in labels):
                    identifiers.append(c)
                    notes.append(f"column {c!r}: dates or times (e.g. {cells[0]!r}), when a row was measured, not "
                                 "what: not an input (name it in input_columns to make it one)")
                    continue
                try:  # numeric labels in numeric order, others in order of appearance
                    labels = sorted(labels, key=float)
                except ValueError:
                    pass
                col = InputColumn(slug, c, "categorical", labels, len(labels))
                index = {v: k for k, v in enumerate(labels)}
                codes.append([float(index[x]) for x in cells])
                if len(labels) > 1:
                    kind = "SMILES strings" if _looks_like_smiles(labels) else "labels"
                    notes.append(f"column {c!r}: categorical ({len(labels)} {kind})")
            else:
                arr = np.array(nums, dtype=float)
                if not np.all(np.isfinite(arr)):
                    raise InvalidInput("input_columns", f"column {c!r} cannot be read: it holds NaN or infinity", c)
                distinct = len(np.unique(arr))
                integer = bool(np.all(arr == np.round(arr)))
                col = InputColumn(slug, c, "integer" if integer else "continuous", None, distinct)
                codes.append(arr.tolist())
                if 1 < distinct <= FEW_LEVELS and len(arr) >= 3 * distinct:
                    notes.append(f"column {c!r}: numeric with only {distinct} levels "
                                 f"{sorted(set(arr.tolist()))}: kept as an ordered {col.kind} input "
                                 "(name it in categorical to treat the levels as unordered categories)")
            if col.distinct <= 1:
                notes.append(f"column {c!r} holds one value ({cells[0]!r}): not an input")
                codes.pop()
                continue
            columns.append(col)
        if not columns:
            why = (f" ({', '.join(map(repr, identifiers))}: a different label on every row or dates, taken for "
                   "an identifier; name it in input_columns to make it an input)") if identifiers else ""
            raise InvalidInput("input_columns", f"no input column of {path.name} varies{why}")
        slugs = [col.name for col in columns]
        for k, s in enumerate(slugs):  # two headers may slug alike: 'A (%)', 'A (mol)'
            if slugs.count(s) > 1:
                slugs[k] = f"{s}_{k}"
        for col, s in zip(columns, slugs):
            col.name = s

        X = np.array(codes, dtype=float).T
        Y = np.array([v for _, _, v in kept], dtype=float)
        groups: dict[tuple[float, ...], list[int]] = {}
        for r, x in enumerate(X):
            groups.setdefault(tuple(x.tolist()), []).append(r)
        keys = list(groups)
        n_rep = len(X) - len(keys)
        if n_rep:
            notes.append(f"{n_rep} row(s) repeat an earlier point: each point's repeats averaged "
                         f"({len(X)} rows -> {len(keys)} points)")
        values = np.array([Y[groups[k]].mean(axis=0) for k in keys]).reshape(len(keys), len(ocols))
        units = {}
        for col in columns:
            if "(" in col.column and col.column.endswith(")"):
                units[col.name] = col.column[col.column.rindex("(") + 1 : -1]
        onames = [_slug(c) for c, _ in specs]
        if objective_name:
            onames[0] = objective_name
        objs = [Objective(name=n, direction=d) for n, (_, d) in zip(onames, specs)]  # type: ignore[arg-type]
        clash = set(onames) & set(slugs)
        if clash or len(set(onames)) != len(onames):
            raise InvalidInput("objective", f"objective names {onames} clash with each other or the inputs", onames)
        return cls(
            name=name or path.stem,
            inputs=slugs,
            input_columns=[col.column for col in columns],
            objective=objs[0],
            objective_column=ocols[0],
            points=np.array(keys, dtype=float).reshape(len(keys), len(columns)),
            values=values[:, 0].copy(),
            repeats=np.array([len(groups[k]) for k in keys]),
            source=str(path.name),
            units=units,
            objectives=objs,
            objective_columns=ocols,
            all_values=values,
            columns=columns,
            notes=notes,
        )

    @classmethod
    def bundled(cls, name: str) -> "PoolModel":
        """One of the datasets shipped in ``sdl.data``: 'p3ht', 'agnp', or an Olympus one
        (:data:`sdl.pools.SUITE`)."""
        specs = {
            "p3ht": ("p3ht_conductivity.csv", "Conductivity (measured) (S/cm)", "maximize", "conductivity"),
            "agnp": ("agnp_loss.csv", "loss", "minimize", "loss"),
        }
        if name not in specs:
            from sdl.pools import OLYMPUS, load_olympus

            if name in OLYMPUS:
                return load_olympus(name)
            raise InvalidInput("dataset", f"unknown dataset; allowed: {sorted(specs) + sorted(OLYMPUS)}", name)
        fname, col, direction, oname = specs[name]
        path = resources.files("sdl.data").joinpath(fname)
        with resources.as_file(path) as p:
            return cls.from_csv(p, col, direction, name=name, objective_name=oname)  # type: ignore[arg-type]

    # ------------------------------------------------------------------ queries
    def __len__(self) -> int:
        return len(self.values)

    def as_dict(self, i: int) -> dict[str, float | str]:
        out: dict[str, float | str] = {}
        for col, v in zip(self.columns, self.points[i]):
            if col.kind == "categorical":
                out[col.name] = col.levels[int(v)]  # type: ignore[index]
            elif col.kind == "integer":
                out[col.name] = int(v)
            else:
                out[col.name] = float(v)
        return out

    def search_space(self) -> SearchSpace:
        params = []
        for j, col in enumerate(self.columns):
            if col.kind == "categorical":
                params.append(ChoiceParameter(name=col.name, values=list(col.levels or [])))
                continue
            lo, hi = float(self.points[:, j].min()), float(self.points[:, j].max())
            params.append(RangeParameter(name=col.name, lower=lo, upper=hi if hi > lo else lo + 1.0,
                                         value_type="int" if col.kind == "integer" else "float",
                                         units=self.units.get(col.name, "")))
        return SearchSpace(parameters=params, pool=[self.as_dict(i) for i in range(len(self))])

    def _code(self, col: InputColumn, value) -> float:
        if col.kind == "categorical":
            if isinstance(value, str):
                if value not in (col.levels or []):
                    raise InvalidInput(col.name, f"must be one of {col.levels}", value)
                return float(col.levels.index(value))  # type: ignore[union-attr]
            return float(value)  # already a code (the simulated robot carries numbers)
        return float(value)

    def index_of(self, point: dict, tol: float = 1e-6) -> int:
        """Row index of ``point``; :class:`InvalidInput` if it is not in the table."""
        missing = [n for n in self.inputs if n not in point]
        if missing:
            raise InvalidInput(missing[0], f"missing; pool {self.name!r} needs {self.inputs}")
        x = np.array([self._code(c, point[c.name]) for c in self.columns])
        if self._keys is None:
            self._keys = {tuple(p.tolist()): i for i, p in enumerate(self.points)}
        hit = self._keys.get(tuple(x.tolist()))
        if hit is not None:
            return hit
        d = np.abs(self.points - x).max(axis=1)
        i = int(np.argmin(d))
        if not d[i] <= tol * max(1.0, float(np.abs(x).max())):
            raise InvalidInput(
                "parameters", f"not in pool {self.name!r}: only the {len(self)} listed samples can be made", point
            )
        return i

    def value(self, point: dict) -> float:
        return float(self.values[self.index_of(point)])

    def values_at(self, i: int) -> dict[str, float]:
        """Every objective's value at row ``i``."""
        return {o.name: float(v) for o, v in zip(self.objectives, self.all_values[i])}  # type: ignore[index]

    def top_indices(self, fraction: float = 0.05) -> set[int]:
        """Indices of the best ``fraction`` of points (at least one), by the first objective."""
        k = max(1, int(math.ceil(fraction * len(self))))
        order = np.argsort(-self.objective.sign * self.values, kind="stable")
        return set(int(i) for i in order[:k])

    def top_tied(self, fraction: float = 0.05) -> tuple[set[int], int]:
        """``(rows, k)``: ``k`` = the size of the best ``fraction``; ``rows``: every point at
        least as good as the k-th best (ties at the boundary count as equally good, so an
        ordinal score with hundreds of equal top values has a fair top set)."""
        k = max(1, int(math.ceil(fraction * len(self))))
        s = self.objective.sign * self.values
        kth = np.sort(s)[::-1][k - 1]
        return set(int(i) for i in np.nonzero(s >= kth)[0]), k

    def best(self) -> tuple[dict, float]:
        i = int(np.argmax(self.objective.sign * self.values))
        return self.as_dict(i), float(self.values[i])

    def describe(self) -> str:
        """One paragraph: rows, inputs and their kinds, objectives, and the loading notes."""
        lines = [f"pool {self.name!r}: {len(self)} points ({int(self.repeats.sum())} rows) from {self.source}",
                 "inputs: " + "; ".join(c.describe() for c in self.columns),
                 "objectives: " + ", ".join(f"{c!r} ({o.direction})"
                                            for c, o in zip(self.objective_columns, self.objectives))]
        return "\n".join(lines + [f"note: {n}" for n in self.notes])

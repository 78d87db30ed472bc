"""Pool-based materials model: a table of real measurements, where only listed points exist.

An agent may only "make" a composition that is in the table, and the measured value
is the table's. Rows that repeat an experiment are averaged (the datasets' README
asks for that or for treating them as noisy repeats; we average).

The bundled tables come from Liang et al., npj Comput. Mater. 7, 188 (2021),
repository PV-Lab/Benchmarking, MIT licence (``sdl/data/LICENSE-PV-Lab-Benchmarking``).
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Literal, Sequence

import numpy as np

from sdl.errors import InvalidInput
from sdl.space import Objective, RangeParameter, SearchSpace


def _slug(column: str) -> str:
    """'P3HT content (%)' -> 'p3ht_content': parameter names safe for Ax and URLs."""
    head = column.split("(")[0].strip().lower()
    out = "".join(ch if ch.isalnum() else "_" for ch in head).strip("_")
    while "__" in out:
        out = out.replace("__", "_")
    return out or "x"


@dataclass
class PoolModel:
    """A finite set of measurable points with one measured value each."""

    name: str
    inputs: list[str]  # parameter names (slugs)
    input_columns: list[str]  # original column headers
    objective: Objective
    objective_column: str
    points: np.ndarray  # (n, d), unique input rows
    values: np.ndarray  # (n,), mean of the repeats
    repeats: np.ndarray  # (n,), number of rows averaged
    source: str = ""
    units: dict[str, str] = field(default_factory=dict)

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_csv(
        cls,
        path: str | Path,
        objective_column: str,
        direction: Literal["maximize", "minimize"],
        *,
        name: str | None = None,
        objective_name: str | None = None,
        input_columns: Sequence[str] | None = None,
    ) -> "PoolModel":
        path = Path(path)
        with open(path, newline="") as fh:
            rows = list(csv.reader(fh))
        header, body = rows[0], [r for r in rows[1:] if r]
        if objective_column not in header:
            raise InvalidInput("objective_column", f"not a column of {path.name}; columns: {header}")
        cols = list(input_columns) if input_columns else [c for c in header if c != objective_column]
        idx = [header.index(c) for c in cols]
        oidx = header.index(objective_column)
        groups: dict[tuple[float, ...], list[float]] = {}
        for r in body:
            key = tuple(float(r[i]) for i in idx)
            groups.setdefault(key, []).append(float(r[oidx]))
        keys = list(groups)
        units = {}
        for c in cols:
            if "(" in c and c.endswith(")"):
                units[_slug(c)] = c[c.rindex("(") + 1 : -1]
        oname = objective_name or _slug(objective_column)
        return cls(
            name=name or path.stem,
            inputs=[_slug(c) for c in cols],
            input_columns=cols,
            objective=Objective(name=oname, direction=direction),
            objective_column=objective_column,
            points=np.array(keys, dtype=float),
            values=np.array([float(np.mean(groups[k])) for k in keys]),
            repeats=np.array([len(groups[k]) for k in keys]),
            source=str(path.name),
            units=units,
        )

    @classmethod
    def bundled(cls, name: str) -> "PoolModel":
        """One of the datasets shipped in ``sdl.data``: 'p3ht' or 'agnp'."""
        specs = {
            "p3ht": ("p3ht_conductivity.csv", "Conductivity (measured) (S/cm)", "maximize", "conductivity"),
            "agnp": ("agnp_loss.csv", "loss", "minimize", "loss"),
        }
        if name not in specs:
            raise InvalidInput("dataset", f"unknown dataset; allowed: {sorted(specs)}", name)
        fname, col, direction, oname = specs[name]
        path = resources.files("sdl.data").joinpath(fname)
        with resources.as_file(path) as p:
            return cls.from_csv(p, col, direction, name=name, objective_name=oname)  # type: ignore[arg-type]

    # ------------------------------------------------------------------ queries
    def __len__(self) -> int:
        return len(self.values)

    def as_dict(self, i: int) -> dict[str, float]:
        return {n: float(v) for n, v in zip(self.inputs, self.points[i])}

    def search_space(self) -> SearchSpace:
        params = [
            RangeParameter(
                name=n,
                lower=float(self.points[:, j].min()),
                upper=float(self.points[:, j].max()) if self.points[:, j].max() > self.points[:, j].min()
                else float(self.points[:, j].min()) + 1.0,
                units=self.units.get(n, ""),
            )
            for j, n in enumerate(self.inputs)
        ]
        return SearchSpace(parameters=params, pool=[self.as_dict(i) for i in range(len(self))])

    def index_of(self, point: dict[str, float], tol: float = 1e-6) -> int:
        """Row index of ``point``; :class:`InvalidInput` if it is not in the table."""
        missing = [n for n in self.inputs if n not in point]
        if missing:
            raise InvalidInput(missing[0], f"missing; pool {self.name!r} needs {self.inputs}")
        x = np.array([float(point[n]) for n in self.inputs])
        d = np.abs(self.points - x).max(axis=1)
        i = int(np.argmin(d))
        if d[i] > tol * max(1.0, float(np.abs(x).max())):
            raise InvalidInput(
                "parameters", f"not in pool {self.name!r}: only the {len(self)} listed samples can be made", point
            )
        return i

    def value(self, point: dict[str, float]) -> float:
        return float(self.values[self.index_of(point)])

    def top_indices(self, fraction: float = 0.05) -> set[int]:
        """Indices of the best ``fraction`` of points (at least one), by the objective."""
        k = max(1, int(math.ceil(fraction * len(self))))
        order = np.argsort(-self.objective.sign * self.values, kind="stable")
        return set(int(i) for i in order[:k])

    def best(self) -> tuple[dict[str, float], float]:
        i = int(np.argmax(self.objective.sign * self.values))
        return self.as_dict(i), float(self.values[i])

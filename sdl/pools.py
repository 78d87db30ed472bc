"""Named pools and table pools: what ``sdl bench --pool``/``--suite`` and ``pool:`` instruments load.

- ``PoolSpec``: any CSV as a pool (path, objectives ``"COLUMN[:min|max]"``, optional input
  columns and categorical columns), validated at the boundary; picklable, so benchmark
  processes load it themselves.
- ``OLYMPUS``: the twelve Olympus datasets shipped in ``sdl/data/olympus`` (MIT licence),
  their parameter types and objective directions from ``datasets.json``.
- ``SUITE``: every bundled pool (12 Olympus + P3HT + AgNP), what ``sdl bench --suite`` runs.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from sdl.errors import InvalidInput
from sdl.sim_devices.pool import PoolModel, parse_objective

#: Ordered labels (worst first) of objective columns that hold text: an ordinal score.
OBJECTIVE_LEVELS = {
    "crystal_score": ["clear_solution", "fine_powder", "small_crystallites", "large_crystallites"],
}


@lru_cache(maxsize=1)
def olympus_catalogue() -> dict[str, dict]:
    """``datasets.json`` of the bundled Olympus datasets."""
    return json.loads(resources.files("sdl.data.olympus").joinpath("datasets.json").read_text())


OLYMPUS: tuple[str, ...] = tuple(sorted(olympus_catalogue()))
SUITE: tuple[str, ...] = (*OLYMPUS, "p3ht", "agnp")


def load_olympus(name: str) -> PoolModel:
    """One Olympus dataset as a pool: parameters typed as ``datasets.json`` says
    (categorical ones as categories even when their labels are numbers)."""
    cat = olympus_catalogue()
    if name not in cat:
        raise InvalidInput("dataset", f"unknown Olympus dataset; allowed: {sorted(cat)}", name)
    entry = cat[name]
    path = resources.files("sdl.data.olympus").joinpath(f"{name}.csv")
    with resources.as_file(path) as p:
        return PoolModel.from_csv(
            p, objectives=[(o["name"], o["direction"]) for o in entry["objectives"]], name=name,
            input_columns=[q["name"] for q in entry["parameters"]],
            categorical=[q["name"] for q in entry["parameters"] if q["type"] == "categorical"],
            objective_levels={o["name"]: OBJECTIVE_LEVELS[o["name"]] for o in entry["objectives"]
                              if o["name"] in OBJECTIVE_LEVELS},
        )


class PoolSpec(BaseModel):
    """A CSV table as a pool (``sdl bench --pool``, campaign instrument ``pool:<path>``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str
    objectives: tuple[str, ...] = Field(min_length=1, description="'COLUMN[:min|max]', maximise when not said")
    name: str | None = None
    input_columns: tuple[str, ...] | None = None
    categorical: tuple[str, ...] = ()
    ignore_columns: tuple[str, ...] = ()

    @field_validator("objectives")
    @classmethod
    def _parse(cls, v):
        for o in v:
            parse_objective(o)
        return v

    @property
    def key(self) -> str:
        """The problem's name in tables: ``name`` or the file's stem."""
        return self.name or Path(self.path).stem

    def load(self) -> PoolModel:
        return PoolModel.from_csv(self.path, objectives=list(self.objectives), name=self.key,
                                  input_columns=self.input_columns, categorical=self.categorical,
                                  ignore_columns=self.ignore_columns)


def load_pool(problem: "str | PoolSpec") -> PoolModel:
    """A bundled pool by name (``SUITE``) or a :class:`PoolSpec`."""
    if isinstance(problem, PoolSpec):
        return problem.load()
    return PoolModel.bundled(problem)

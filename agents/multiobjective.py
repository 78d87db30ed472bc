"""Several objectives: the Pareto front of what was measured and the hypervolume it dominates.

Each objective is counted in its own direction (maximise or minimise). The hypervolume
is computed with BoTorch's exact box decomposition (``DominatedPartitioning``) after
turning every objective into a maximum (multiplying by its sign), bounded by a
*reference point* given in the objectives' own units: the worst value of each
objective that still counts (for a minimised objective, the largest acceptable).

Observations that failed or miss an objective are ignored; so are points that do not
dominate the reference point (they add no volume).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from sdl.errors import InvalidInput
from sdl.models import Observation
from sdl.space import Objective


def pareto_indices(values: Sequence[Sequence[float]], signs: Sequence[float]) -> list[int]:
    """Indices of the non-dominated rows (each column multiplied by its sign is maximised).

    Of rows with identical values, the first one is kept.
    """
    Y = np.asarray(values, dtype=float).reshape(len(values), -1) * np.asarray(signs, dtype=float)
    keep = []
    for i, y in enumerate(Y):
        dominated = np.any(np.all(Y >= y, axis=1) & np.any(Y > y, axis=1))
        duplicate = np.any(np.all(Y[:i] == y, axis=1))
        if not dominated and not duplicate:
            keep.append(i)
    return keep


def _usable(observations: Sequence[Observation], objectives: Sequence[Objective]) -> list[Observation]:
    names = [o.name for o in objectives]
    return [
        o for o in observations
        if o.ok and all(k in o.values and o.values[k] is not None and np.isfinite(o.values[k]) for k in names)
    ]


def objective_matrix(observations: Sequence[Observation], objectives: Sequence[Objective]) -> np.ndarray:
    """(n, m) raw objective values of the usable observations."""
    obs = _usable(observations, objectives)
    return np.array([[float(ob.values[o.name]) for o in objectives] for ob in obs]).reshape(len(obs), len(objectives))


def pareto_front(observations: Sequence[Observation], objectives: Sequence[Objective]) -> list[Observation]:
    """The non-dominated observations, in the order they were given."""
    if not objectives:
        raise InvalidInput("objectives", "at least one objective is needed")
    obs = _usable(observations, objectives)
    if not obs:
        return []
    Y = objective_matrix(obs, objectives)
    return [obs[i] for i in pareto_indices(Y, [o.sign for o in objectives])]


def _reference_vector(reference, objectives: Sequence[Objective]) -> np.ndarray:
    if isinstance(reference, Mapping):
        missing = [o.name for o in objectives if o.name not in reference]
        if missing:
            raise InvalidInput("reference", f"needs a value for every objective; missing {missing}", dict(reference))
        ref = [float(reference[o.name]) for o in objectives]
    else:
        ref = [float(v) for v in reference]
        if len(ref) != len(objectives):
            raise InvalidInput("reference", f"needs {len(objectives)} values, one per objective", list(reference))
    if not all(np.isfinite(ref)):
        raise InvalidInput("reference", "values must be finite", ref)
    return np.asarray(ref)


def hypervolume_of(Y: np.ndarray, signs: Sequence[float], reference: Sequence[float]) -> float:
    """Hypervolume of the raw values ``Y`` (n, m) bounded by ``reference`` (raw units)."""
    import torch
    from botorch.utils.multi_objective.box_decompositions.dominated import DominatedPartitioning

    s = np.asarray(signs, dtype=float)
    Ys = np.asarray(Y, dtype=float).reshape(-1, len(s)) * s
    ref = np.asarray(reference, dtype=float) * s
    Ys = Ys[np.all(Ys > ref, axis=1)]
    if len(Ys) == 0:
        return 0.0
    part = DominatedPartitioning(ref_point=torch.as_tensor(ref, dtype=torch.float64),
                                 Y=torch.as_tensor(Ys, dtype=torch.float64))
    return float(part.compute_hypervolume())


def hypervolume(observations: Sequence[Observation], objectives: Sequence[Objective], reference) -> float:
    """Hypervolume dominated by the observations and bounded by ``reference``.

    ``reference``: one value per objective (a dict by name, or a sequence in the
    objectives' order), in the objectives' units.
    """
    ref = _reference_vector(reference, objectives)
    Y = objective_matrix(observations, objectives)
    return hypervolume_of(Y, [o.sign for o in objectives], ref)


def default_reference(Y: np.ndarray, signs: Sequence[float], margin: float = 0.1) -> np.ndarray:
    """A reference point from data (raw units): each objective's worst value, made a
    ``margin`` of its range worse. What the agents use when none is given."""
    s = np.asarray(signs, dtype=float)
    Ys = np.asarray(Y, dtype=float).reshape(-1, len(s)) * s
    lo, hi = Ys.min(axis=0), Ys.max(axis=0)
    span = np.where(hi > lo, hi - lo, np.maximum(np.abs(hi), 1.0))
    return (lo - margin * span) * s

"""The held-out choice of bo's settings (benchmarks/heldout_defaults.py): the candidate is
chosen by its mean rank on one half only, among the candidates asked for that ran on every
pool of the half, and the default wins a tie."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from sdl.bench import CurveResult

_spec = importlib.util.spec_from_file_location(
    "heldout_defaults", Path(__file__).resolve().parents[1] / "benchmarks" / "heldout_defaults.py")
heldout = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(heldout)


def _runs(agent: str, problem: str, level: float, seeds: int = 4) -> list[CurveResult]:
    return [CurveResult(agent, problem, s, [level + 0.01 * s] * 10, 1.0) for s in range(seeds)]


def test_choice_uses_only_the_half_and_complete_candidates():
    half = ["a", "c"]
    runs = (_runs("bo", "a", 0.5) + _runs("bo", "c", 0.5)
            + _runs("bo[beta=1]", "a", 0.6) + _runs("bo[beta=1]", "c", 0.6)
            + _runs("bo[ei]", "a", 0.9)  # best where it ran, but not run on "c": left out
            + _runs("bo", "b", 0.9) + _runs("bo[beta=1]", "b", 0.1))  # "b" is the other half: not looked at
    chosen, ranks = heldout.choose(runs, ["bo", "bo[beta=1]", "bo[ei]"], half, 10)
    assert chosen == "bo[beta=1]"
    assert ranks == {"bo": 2.0, "bo[beta=1]": 1.0}
    # a candidate not asked for takes no part, however good
    assert heldout.choose(runs, ["bo", "bo[ei]"], half, 10)[0] == "bo"


def test_the_default_wins_a_tie():
    runs = _runs("bo[ei]", "a", 0.5) + _runs("bo", "a", 0.5)
    assert heldout.choose(runs, ["bo[ei]", "bo"], ["a"], 10)[0] == "bo"

"""Agents: who chooses the next experiment. ``make_agent(name, space, objectives, seed)``.

==========  ==============================================================================
name        what it is
==========  ==============================================================================
bo          the default: Ax Bayesian optimisation for one objective on continuous
            spaces and compositions; the BoTorch agent on a discrete pool and for
            several objectives (what Ax cannot express there: an objective that is a
            parameter known exactly, a figure of merit modelled above its floor)
ax          Ax's Bayesian optimisation always, several objectives included
ax-default  Ax's own default generation strategy, untuned (baseline); on a pool each
            candidate is measured at the nearest open row
botorch     BoTorch GP + noisy log-EI, log-transform for heavy-tailed objectives
gp-ei       a plain GP + expected-improvement loop (what users hand-write today)
random      uniform random points (baseline)
sobol       scrambled Sobol sequence (baseline)
grid        full-factorial grid in seeded random order (baseline)
==========  ==============================================================================
"""

from __future__ import annotations

from typing import Callable, Sequence

from sdl.agents.base import Agent
from sdl.errors import InvalidInput
from sdl.space import Objective, SearchSpace

DEFAULT_AGENT = "bo"


def _bo(space: SearchSpace, objectives: Sequence[Objective], seed: int = 0, **options) -> Agent:
    """Ax where it is the better tool (one objective, continuous), BoTorch where Ax cannot
    express what the measurements need (docs/agents.md has the numbers behind both)."""
    # failure_model (sdl.agents.feasibility) lives in the BoTorch agent: asking for it routes there
    wants_feasibility = options.get("failure_model", "ignore") != "ignore" or options.get("exposure") not in (None, False)
    if space.pool is not None or len(objectives) > 1 or wants_feasibility:
        from sdl.agents.gp import BoTorchAgent

        agent = BoTorchAgent(space, objectives, seed, **options)
        agent.name = "bo"
        return agent
    from sdl.agents.ax_agent import AxAgent

    # "ignore" / false say what Ax does anyway (a failed trial is marked failed)
    options = {k: v for k, v in options.items() if k not in ("failure_model", "exposure")}
    AxAgent.check_option_names(options, "'bo' on this space (one objective, continuous: Ax's loop; the "
                                        "BoTorch options, such as beta or kernel, apply on pools, with several "
                                        "objectives, with failure_model or with exposure)")
    agent = AxAgent(space, objectives, seed, **options)
    agent.name = "bo"
    return agent


def _lazy(module: str, cls: str) -> Callable[..., Agent]:
    def build(space: SearchSpace, objectives: Sequence[Objective], seed: int = 0, **options) -> Agent:
        import importlib

        return getattr(importlib.import_module(f"sdl.agents.{module}"), cls)(space, objectives, seed, **options)

    return build


AGENTS: dict[str, Callable[..., Agent]] = {
    "bo": _bo,
    "ax": _lazy("ax_agent", "AxAgent"),
    "ax-default": _lazy("ax_pool", "AxDefaultAgent"),
    "botorch": _lazy("gp", "BoTorchAgent"),
    "gp-ei": _lazy("gp", "PlainGPAgent"),
    "random": _lazy("baselines", "RandomAgent"),
    "sobol": _lazy("baselines", "SobolAgent"),
    "grid": _lazy("baselines", "GridAgent"),
}


def check_agent_name(name: str) -> str:
    if name not in AGENTS:
        raise InvalidInput("agent", f"unknown agent; allowed: {sorted(AGENTS)}", name)
    return name


def make_agent(name: str, space: SearchSpace, objectives: Sequence[Objective], seed: int = 0, **options) -> Agent:
    """Build the agent ``name`` for ``space`` and ``objectives``; options are agent-specific."""
    check_agent_name(name)
    return AGENTS[name](space, list(objectives), seed, **options)


__all__ = ["AGENTS", "DEFAULT_AGENT", "Agent", "check_agent_name", "make_agent"]

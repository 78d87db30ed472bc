"""Campaign reports: a convergence plot (PNG) and a summary (JSON)."""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path
from typing import Any

from sdl.campaign import CampaignSpec, best_trace, plain_spec
from sdl.errors import InvalidInput
from sdl.models import Observation
from sdl.space import Objective
from sdl.store import Store, jsonable


def summarize(store: Store, campaign_id: str, optimum: dict | None = None) -> dict[str, Any]:
    row = store.campaign(campaign_id)
    spec = plain_spec(row)
    obs = store.observations(campaign_id)
    instrument = functools.cache(lambda: _instrument(spec))  # built at most once, only if needed
    objective = (spec.objectives or [None])[0] or _instrument_objective(instrument()) or _objective_from(obs)
    ok = [o for o in obs if o.ok]
    best_obs = None
    if ok:
        best_obs = max(ok, key=lambda o: objective.sign * o.values.get(objective.name, -math.inf * objective.sign))
    runs = store.runs(campaign_id)
    summary: dict[str, Any] = {
        "campaign_id": campaign_id,
        "name": row.name,
        "status": row.status,
        "message": row.message,
        "instrument": spec.instrument,
        "agent": spec.agent,
        "seed": spec.seed,
        "budget": spec.budget,
        "experiments": len(obs),
        "failed": sum(1 for o in obs if not o.ok),
        "interrupted_runs": sum(1 for r in runs if r.status == "interrupted"),
        "objective": objective.model_dump(),
        "best": None if best_obs is None else {
            "value": best_obs.values.get(objective.name),
            "params": best_obs.params,
            "truth": best_obs.extra.get("truth"),
            "run_uid": best_obs.run_uid,
        },
        "best_trace": best_trace(obs, objective),
        "recommended": _recommended(spec, obs, instrument),
        "observations": [
            {"params": o.params, "values": o.values, "ok": o.ok, "truth": o.extra.get("truth"),
             "error": o.extra.get("error"), "run_uid": o.run_uid}
            for o in obs
        ],
    }
    if optimum is not None:
        summary["optimum"] = optimum
        opt_value = optimum.get(objective.name, optimum.get("fom"))
        if opt_value and best_obs is not None and best_obs.extra.get("truth") is not None:
            summary["best_truth_over_optimum"] = best_obs.extra["truth"] / opt_value
    return jsonable(summary)


def _recommended(spec: CampaignSpec, obs: list[Observation], instrument: Any) -> dict[str, Any] | None:
    """What an agent with a model of the noise (the ``exposure`` option) reports: the measured
    point of highest posterior mean and that mean (``estimate``), with the noise-free value
    there where the simulation knows it. None for other agents (the best measured value is
    the answer) or when the campaign's space cannot be built here."""
    if not spec.agent_options.get("exposure") or not any(o.ok for o in obs):
        return None
    from sdl.registry import make_agent

    inst = instrument() if spec.space is None or spec.objectives is None else None
    space, objectives = spec.space or getattr(inst, "space", None), spec.objectives or getattr(inst, "objectives", None)
    if space is None or not objectives:
        return None
    try:
        agent = make_agent(spec.agent, space, objectives, seed=spec.seed, **spec.agent_options)
    except InvalidInput:  # options its run refused: the summary still shows what there is
        return None
    agent.tell(obs)
    picked = agent.recommend() if hasattr(agent, "recommend") else None
    if picked is None:
        return None
    params, estimate = picked
    truth = next((o.extra["truth"] for o in obs if o.params == params and o.extra.get("truth") is not None), None)
    return {"params": params, "estimate": estimate, "truth": truth}


def _instrument(spec: CampaignSpec) -> Any:
    """The campaign's instrument, not connected (None when it is not available here)."""
    try:
        from sdl.instruments import make_instrument

        return make_instrument(spec.instrument, options={**spec.instrument_options, "connect": False,
                                                         "epics_connect": False})
    except Exception:  # noqa: BLE001 - an instrument not available here: the caller does without
        return None


def _instrument_objective(inst: Any) -> Objective | None:
    """The instrument's first objective (its direction matters: a minimised one is not a maximum)."""
    return None if inst is None else inst.objectives[0]


def _objective_from(obs: list[Observation]) -> Objective:
    for o in obs:
        if o.values:
            return Objective(name=next(iter(o.values)))
    return Objective(name="fom")


def write_summary(summary: dict, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=2))
    return path


def convergence_plot(traces: dict[str, list[float | None]], path: Path, *, objective: str = "fom",
                     optimum: float | None = None, points: list[float | None] | None = None,
                     title: str = "Campaign convergence") -> Path:
    """Best-so-far against experiment number, one line per trace; the hidden optimum dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    if points:
        xs = [i + 1 for i, v in enumerate(points) if v is not None]
        ax.scatter(xs, [v for v in points if v is not None], s=14, color="0.6", label="measured", zorder=2)
    for label, trace in traces.items():
        xs = [i + 1 for i, v in enumerate(trace) if v is not None]
        ax.step(xs, [v for v in trace if v is not None], where="post", lw=2, label=f"best so far ({label})", zorder=3)
    if optimum is not None:
        ax.axhline(optimum, ls="--", color="k", lw=1, label="hidden optimum")
    ax.set_xlabel("experiment")
    ax.set_ylabel(objective)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path

"""Cheap before expensive: every sample is measured at a cheap station, and only those
the cascade's model predicts to be promising go on to the expensive one (a gated task).

The model sees both measurements: from the samples measured at both stations it fits
the expensive value on the cheap one (least squares, with the residual spread), and
sends a sample on when its optimistic prediction (mean + ``kappa`` x spread) could beat
the best expensive value measured so far. The first ``warmup`` samples all go on (the
model needs pairs). The campaign's agent is told ``<objective>_est``: the expensive
value where it was measured, else the cheap one calibrated by the model (the source
is in the observation's ``extra``), so it learns from every sample.

Config (``cascade`` in a workflow campaign spec)::

    {"task": "xrd", "cheap": "uvvis_score", "objective": "fom", "warmup": 4, "kappa": 1.0}
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from sdl.workflows.engine import Engine


class CascadeSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    task: str = Field(..., description="the gated (expensive) measure task")
    cheap: str = Field(..., description="the reduce objective measured cheaply for every sample")
    objective: str = Field(..., description="the reduce objective of the expensive task")
    warmup: int = Field(4, ge=2, le=1000, description="samples that always go on (the model needs pairs)")
    kappa: float = Field(1.0, ge=0, le=10, description="optimism of the prediction, in residual spreads")


class Cascade:
    def __init__(self, cspec: Any, engine: Engine):
        self.spec = CascadeSpec.model_validate(cspec.cascade)
        self.engine = engine
        self.campaign_id: str | None = None
        self.objective_sign = 1.0
        self.sent = 0
        self.held = 0

    # ------------------------------------------------------------------ model
    def pairs(self, observations: list) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = [], []
        for o in observations:
            v = o.values
            if self.spec.cheap in v and self.spec.objective in v:
                xs.append(v[self.spec.cheap])
                ys.append(v[self.spec.objective])
        return np.asarray(xs, float), np.asarray(ys, float)

    def predict(self, observations: list, cheap: float) -> tuple[float, float]:
        """(mean, spread) of the expensive value for a cheap reading."""
        x, y = self.pairs(observations)
        if len(x) < 2 or np.ptp(x) == 0:
            return (float(np.mean(y)) if len(y) else math.nan), (float(np.std(y)) if len(y) > 1 else math.inf)
        a, b = np.polyfit(x, y, 1)
        resid = y - (a * x + b)
        sd = float(np.sqrt(np.sum(resid**2) / max(1, len(x) - 2)))
        return float(a * cheap + b), sd

    def estimate(self, observations: list, values: dict) -> tuple[float | None, str]:
        if self.spec.objective in values:
            return values[self.spec.objective], "measured"
        if self.spec.cheap in values:
            m, _ = self.predict(observations, values[self.spec.cheap])
            if math.isfinite(m):
                return m, f"predicted from {self.spec.cheap}"
        return None, "none"

    def go(self, observations: list, cheap: float) -> bool:
        _, y = self.pairs(observations)
        if len(y) < self.spec.warmup:
            return True
        m, sd = self.predict(observations, cheap)
        return m + self.spec.kappa * sd >= float(np.max(y))

    # --------------------------------------------------------------- decisions
    def tell(self, observations: list) -> None:  # the model is refitted from the store at each decision
        pass

    def decide(self, agent: Any, campaign_id: str, observations: list) -> None:
        """Decide every gated task whose cheap measurement is in."""
        for wf in self.engine.workflows(campaign_id, status="running"):
            view = self.engine.workflow(wf.id)
            tasks = {t["name"]: t for t in view["tasks"]}
            gated = tasks.get(self.spec.task)
            if gated is None or gated["status"] != "waiting" or self.spec.task in (wf.result or {}).get("gates", {}):
                continue
            if not all(tasks[a]["status"] in ("done", "skipped", "failed") for a in gated["after"]):
                continue
            cheap = None
            for a in gated["after"]:
                r = tasks[a]["result"] or {}
                if self.spec.cheap in r:
                    cheap = r[self.spec.cheap]
            if cheap is None:  # no cheap reading for this sample: it goes on
                go = True
            else:
                go = self.go(observations, float(cheap))
            self.sent += go
            self.held += not go
            self.engine.decide_gate(wf.id, self.spec.task, go)

"""Cheap before expensive: every sample is measured at a cheap station, and only those
the cascade's model predicts to be promising go on to the expensive one (a gated task).

The model sees both measurements: from the samples measured at both stations it fits
the expensive value on the cheap one (least squares) and sends a sample on when the
upper end of its *prediction interval* could beat the best expensive value measured so
far. The interval is the ordinary least-squares one, so it carries the calibration's own
uncertainty: Student-t with n - 2 degrees of freedom over
``s * sqrt(1 + 1/n + (x - mean x)^2 / Sxx)``; it is wide when few samples have both
measurements (infinite below three: the sample goes on), when the fit is poor (large
residual ``s``), and for a cheap reading outside the calibrated range. ``kappa`` is the
one-sided level of that bound, in normal quantiles (1.0: 84 %), turned into the Student-t
quantile of the same level.

The cascade's premise is that a higher cheap reading means a higher expensive value. The
gate holds a sample back only where its pairs support that premise: while the fitted
slope is not above zero at the same level (its lower bound ``a - t * s / sqrt(Sxx)`` is
at most 0: e.g. every sample so far is equally poor, and the cheap reading varies with
something else), the calibration cannot rank samples and every sample goes on; and a
sample whose cheap reading is at least that of the best measured sample goes on (a
straight line fitted mostly on poor samples underestimates the good end).

A calibration can still be confidently wrong (its pairs are the samples it chose to
send, so nothing held back ever corrects it). So the gate never holds more than
``max_held`` samples in a row: the next one goes on regardless, an exploratory send (at
least one sample in ``max_held + 1`` checks the calibration where it holds back); among
samples decided together the exploratory one is the highest upper bound. The streak is
read from the store (the gates of the campaign's workflows), so a resumed runner keeps it.

The first ``warmup`` samples all go on (the model needs pairs). The campaign's agent is
told ``<objective>_est``: the expensive value where it was measured, else the cheap one
calibrated by the model, marked as a prediction (the source is in the observation's
``extra``), so it learns from every sample. A prediction is kept within the expensive
values measured so far: the line is not extrapolated past what the calibration has
seen (a poor sample's reading would otherwise tell the agent a figure of merit of -0.3).

Config (``cascade`` in a workflow campaign spec)::

    {"task": "xrd", "cheap": "uvvis_score", "objective": "fom", "warmup": 4, "kappa": 1.0, "max_held": 4}
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from scipy import stats

from sdl.workflows.engine import Engine

log = logging.getLogger(__name__)


class CascadeSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    task: str = Field(..., description="the gated (expensive) measure task")
    cheap: str = Field(..., description="the reduce objective measured cheaply for every sample")
    objective: str = Field(..., description="the reduce objective of the expensive task")
    warmup: int = Field(4, ge=2, le=1000, description="samples that always go on (the model needs pairs)")
    kappa: float = Field(1.0, ge=0, le=10, description="level of the prediction interval's upper bound, in "
                                                      "normal quantiles (1.0: one-sided 84 %)")
    max_held: int | None = Field(4, ge=1, le=1000, description="at most this many samples held back in a row: "
                                 "the next one goes on (exploratory send); null: never (a gate that can stall)")


@dataclass(frozen=True)
class Prediction:
    """The calibrated expensive value for a cheap reading: mean and upper bound of its interval."""

    mean: float
    upper: float
    pairs: int
    informative: bool = False  # the fitted slope is above zero at the interval's level


class Cascade:
    def __init__(self, cspec: Any, engine: Engine):
        self.spec = CascadeSpec.model_validate(cspec.cascade)
        self.engine = engine
        self.campaign_id: str | None = None
        self.objective_sign = 1.0
        self.sent = 0
        self.held = 0
        self.explored = 0

    # ------------------------------------------------------------------ model
    def pairs(self, observations: list) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = [], []
        for o in observations:
            v = o.values
            if self.spec.cheap in v and self.spec.objective in v:
                xs.append(v[self.spec.cheap])
                ys.append(v[self.spec.objective])
        return np.asarray(xs, float), np.asarray(ys, float)

    def prediction(self, observations: list, cheap: float) -> Prediction:
        """The least-squares calibration's prediction for ``cheap`` with its interval's upper bound."""
        x, y = self.pairs(observations)
        n = len(x)
        level = float(stats.norm.cdf(self.spec.kappa))
        if n == 0:
            return Prediction(math.nan, math.inf, 0)
        if np.ptp(x) == 0:  # no slope to fit: the mean, as a prediction of one more draw
            m = float(np.mean(y))
            if n < 2:
                return Prediction(m, math.inf, n)
            se = float(np.std(y, ddof=1)) * math.sqrt(1 + 1 / n)
            return Prediction(m, m + float(stats.t.ppf(level, n - 1)) * se, n)
        a, b = np.polyfit(x, y, 1)
        m = float(a * cheap + b)
        if n < 3:  # two points fit exactly: nothing says how wrong the line is
            return Prediction(m, math.inf, n)
        resid = y - (a * x + b)
        s = float(np.sqrt(np.sum(resid**2) / (n - 2)))
        sxx = float(np.sum((x - x.mean()) ** 2))
        se = s * math.sqrt(1 + 1 / n + (cheap - float(x.mean())) ** 2 / sxx)
        t = float(stats.t.ppf(level, n - 2))
        return Prediction(m, m + t * se, n, informative=bool(a - t * s / math.sqrt(sxx) > 0))

    def estimate(self, observations: list, values: dict) -> tuple[float | None, str]:
        if self.spec.objective in values:
            return values[self.spec.objective], "measured"
        if self.spec.cheap in values:
            m = self.prediction(observations, values[self.spec.cheap]).mean
            if math.isfinite(m):  # no further than the measured values: the line is not extrapolated
                _, y = self.pairs(observations)  # past what the calibration has seen (a fom of -0.3)
                return float(np.clip(m, y.min(), y.max())), f"predicted from {self.spec.cheap}"
        return None, "none"

    def promising(self, observations: list, cheap: float) -> bool:
        """The model's own verdict (no exploration): could this sample beat the best measured?"""
        x, y = self.pairs(observations)
        if len(y) < self.spec.warmup:
            return True
        p = self.prediction(observations, cheap)
        if not p.informative:  # the pairs do not show that the cheap reading ranks samples
            return True
        if cheap >= float(x[int(np.argmax(y))]):  # reads at least as well as the best measured sample
            return True
        return p.upper >= float(np.max(y))

    # --------------------------------------------------------------- decisions
    def tell(self, observations: list) -> None:  # the model is refitted from the store at each decision
        pass

    def held_in_a_row(self, campaign_id: str) -> int:
        """Samples held back since the last one sent (workflows in creation order, decided gates only)."""
        n = 0
        for wf in reversed(self.engine.workflows(campaign_id)):
            gates = (wf.result or {}).get("gates", {})
            if self.spec.task not in gates:
                continue
            if gates[self.spec.task]:
                break
            n += 1
        return n

    def decide(self, agent: Any, campaign_id: str, observations: list) -> None:
        """Decide every gated task whose cheap measurement is in, highest upper bound first."""
        ready: list[tuple[float, str, float | None]] = []
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
                ready.append((math.inf, wf.id, None))
            else:
                ready.append((self.prediction(observations, float(cheap)).upper, wf.id, float(cheap)))
        if not ready:
            return
        streak = self.held_in_a_row(campaign_id)
        for upper, wid, cheap in sorted(ready, key=lambda r: -r[0]):
            promising = cheap is None or self.promising(observations, cheap)
            go = promising or (self.spec.max_held is not None and streak >= self.spec.max_held)
            if go and not promising:
                self.explored += 1
                log.info("cascade %s: workflow %s sent on to explore after %d held in a row (upper bound %.4g)",
                         campaign_id, wid, streak, upper)
            streak = 0 if go else streak + 1
            self.sent += go
            self.held += not go
            self.engine.decide_gate(wid, self.spec.task, go)

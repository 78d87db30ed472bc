"""The default agent: Bayesian optimisation through Ax (``ax.Client``) on BoTorch.

Restart-safe by construction: each ``ask`` builds a fresh Ax client from the search
space, attaches every observation as a completed trial and every pending point as a
running one, and asks for the next batch with a random seed derived from
``(seed, number of points seen)``. The agent's state is therefore only its observations:
rebuilding it from the store gives the same next suggestion.

Two choices differ from Ax's out-of-the-box setup, both measured (see the README):

- the first ``n_init`` points come from the agent's own seeded uniform design, so the
  initial design is reproducible and identical to what the baselines start from;
- the model step is Ax's modular BoTorch generator with fewer acquisition restarts
  and a thinned polytope sampler. Ax's default takes 7-10 s per suggestion on 2 cores
  for a composition (a linear constraint); this takes about 1 s, with the same
  median result on the simulated lab.

Compositions: Ax gets the first k - 1 components with ``sum <= total``; the last one
is implied. ``parameter_constraints`` (``["a + b <= 0.8"]``, see
:mod:`sdl.agents.constraints`) become Ax parameter constraints. Several objectives
become an Ax multi-objective optimisation (qLogNEHVI), with ``reference_point`` (one
value per objective: the worst that still counts) as Ax's objective thresholds; outcome
constraints (``{"metric": "stability", "op": ">=", "bound": 0.5}``) pass through as Ax
outcome constraints.

Observations are attached to the fresh client in one bulk step (Ax's per-trial
``complete_trial`` re-validates all earlier data each time, which made a suggestion
after 100 observations cost seconds); the model's leave-one-out R^2 (closed form, on
Ax's own fitted GP) goes into each suggestion's provenance as ``fit_loo_r2``.
"""

from __future__ import annotations

import logging
import math
import warnings
from typing import Sequence

import numpy as np

from sdl.agents.common import AgentBase
from sdl.errors import InvalidInput
from sdl.models import Provenance
from sdl.space import ChoiceParameter, FixedParameter, RangeParameter

DEFAULT_N_INIT = 5


def _fast_generation_strategy(num_restarts: int = 4, raw_samples: int = 256, analytic: bool = False,
                              discrete: bool = False, subset_fit: bool = False):
    """Ax's modular BoTorch generator with a cheaper acquisition optimisation; with
    ``analytic``, log-EI in closed form (one point, one objective, nothing pending).
    ``discrete``: the space has choice or integer parameters, which Ax optimises with its
    mixed optimisers (they take no polytope-sampler options). ``subset_fit``: one output,
    hyperparameters fitted on at most 256 observations (:class:`sdl.agents.gp.SubsetFitGP`)."""
    from ax.adapter.registry import Generators
    from ax.generation_strategy.generation_node import GenerationNode
    from ax.generation_strategy.generation_strategy import GenerationStrategy
    from ax.generation_strategy.generator_spec import GeneratorSpec
    from ax.generators.torch.botorch_modular.surrogate import ModelConfig, SurrogateSpec

    if subset_fit:
        from sdl.agents.gp import SubsetFitGP

        config = ModelConfig(botorch_model_class=SubsetFitGP, name="default")
    else:
        config = ModelConfig(name="default")
    kwargs = {"surrogate_spec": SurrogateSpec(model_configs=[config])}
    if analytic:
        from botorch.acquisition.analytic import LogExpectedImprovement

        kwargs["botorch_acqf_class"] = LogExpectedImprovement
    spec = GeneratorSpec(
        generator_enum=Generators.BOTORCH_MODULAR,
        generator_kwargs=kwargs,
        generator_gen_kwargs={
            "model_gen_options": {
                "optimizer_kwargs": {
                    "num_restarts": num_restarts,
                    "raw_samples": raw_samples,
                    # a cap on L-BFGS-B steps: 40 gave the same acquisition value (to 1e-4) as
                    # the default 200 on Hartmann-6 data with 20-100 points
                    # (Ax's mixed optimisers, for discrete spaces, take neither option)
                    **({} if discrete else {"options": {"n_burnin": 200, "n_thinning": 2, "maxiter": 40}}),
                }
            }
        },
    )
    return GenerationStrategy(name="sdl-fast-mbm", nodes=[GenerationNode(name="MBM", generator_specs=[spec])])


class AxAgent(AgentBase):
    """Ax Bayesian optimisation; several objectives and outcome constraints supported."""

    name = "ax"
    option_names = ("n_init", "outcome_constraints", "reference_point", "ax_default", "num_restarts", "raw_samples")
    #: Whether the class maps Ax's points onto a pool (``sdl.agents.ax_pool``); this one does not.
    handles_pool = False

    def __init__(self, space, objectives, seed: int = 0, **options):
        super().__init__(space, objectives, seed, **options)
        if space.pool is not None and not self.handles_pool:
            raise InvalidInput("space", "the Ax agent needs a continuous space; pools use the BoTorch agent")
        # Ax parameter and metric names: safe identifiers, mapped back on the way out.
        self._pname = {p.name: f"x{i}" for i, p in enumerate(space.parameters)}
        self._mname = {o.name: f"y{i}" for i, o in enumerate(self.objectives)}
        self._implied = {comp.components[-1]: comp for comp in space.compositions}
        from sdl.agents.gp import check_outcome_constraints

        self._constraints = check_outcome_constraints(options.get("outcome_constraints"), self.objectives)
        self._reference = options.get("reference_point")
        if self._reference is not None:
            from sdl.agents.multiobjective import _reference_vector

            if len(self.objectives) < 2:
                raise InvalidInput("reference_point", "only for several objectives", self._reference)
            self._reference = _reference_vector(self._reference, self.objectives)
        # Checked here, so that a bad constraint is reported before any experiment.
        self._ax_parameter_constraints = [c.to_ax(self._pname, space) for c in self.constraints.constraints]

    # ------------------------------------------------------------------ Ax plumbing
    def _client(self, seed: int, analytic: bool = False):
        previous = logging.root.manager.disable
        logging.disable(logging.INFO)  # Ax announces its storage layer at import
        try:
            from ax import ChoiceParameterConfig, Client, RangeParameterConfig
            from ax.utils.common.logger import set_ax_logger_levels
        finally:
            logging.disable(previous)

        set_ax_logger_levels(logging.WARNING)  # Ax logs every trial at INFO: too chatty for a CLI
        client = Client(random_seed=seed)
        params, cons = [], []
        for p in self.space.parameters:
            if isinstance(p, FixedParameter) or p.name in self._implied:
                continue
            name = self._pname[p.name]
            if isinstance(p, ChoiceParameter):
                kind = "str" if isinstance(p.values[0], str) else "float"
                params.append(ChoiceParameterConfig(name=name, values=list(p.values), parameter_type=kind,
                                                    is_ordered=False))
            else:
                params.append(RangeParameterConfig(
                    name=name, bounds=(float(p.lower), float(p.upper)), parameter_type=p.value_type,
                    scaling="log" if p.log_scale else None,
                ))
        for comp in self.space.compositions:
            cons.append(" + ".join(self._pname[c] for c in comp.components[:-1]) + f" <= {comp.total!r}")
        cons.extend(self._ax_parameter_constraints)
        client.configure_experiment(parameters=params, parameter_constraints=cons or None, name="sdl")
        objective = ", ".join(("" if o.direction == "maximize" else "-") + self._mname[o.name] for o in self.objectives)
        outcome = []
        for c in self._constraints:
            metric = self._metric_name(c["metric"])
            outcome.append(f"{metric} {c['op']} {float(c['bound'])!r}")
        if self._reference is not None:  # objective thresholds: Ax's name for the reference point
            for o, r in zip(self.objectives, self._reference):
                outcome.append(f"{self._mname[o.name]} {'>=' if o.sign > 0 else '<='} {float(r)!r}")
        client.configure_optimization(objective=objective, outcome_constraints=outcome or None)
        if not self.options.get("ax_default", False):
            client.set_generation_strategy(_fast_generation_strategy(
                int(self.options.get("num_restarts", 4)), int(self.options.get("raw_samples", 256)), analytic,
                discrete=any(isinstance(p, ChoiceParameter) or getattr(p, "value_type", "") == "int"
                             for p in self.space.parameters),
                subset_fit=len(self.objectives) == 1 and not self._constraints))
        return client

    def _attach(self, client) -> None:
        """Every observation as a completed (or failed) trial, every pending point as a
        running one; the data goes to the experiment in one step."""
        from ax.core.data import Data
        from ax.core.evaluations_to_data import raw_evaluations_to_data

        from ax.core.arm import Arm

        exp = client._experiment
        signature = {name: m.signature for name, m in exp.metrics.items()}
        rows, done, failed = [], [], []

        def attach(params: dict):
            # what Experiment.attach_trial does, less its per-point membership check (every
            # point was validated against the space when it was suggested or told)
            return exp.new_trial().add_arm(Arm(parameters=self._to_ax(params))).mark_running(no_runner_required=True)

        for obs in self.observations:
            trial = attach(obs.params)
            idx = trial.index
            data = {self._mname[k]: float(v) for k, v in obs.values.items()
                    if k in self._mname and v is not None and math.isfinite(v)}
            if obs.ok and all(self._mname[o.name] in data for o in self.objectives):
                rows.extend(raw_evaluations_to_data(
                    raw_data={trial.arm.name: {k: (v, None) for k, v in data.items()}},
                    metric_name_to_signature=signature, trial_index=idx)._data_rows)
                done.append(trial)
            else:
                failed.append(trial)
        if rows:
            exp.attach_data(Data(data_rows=rows))
        for trial in done:  # attach_trial leaves a trial running
            trial.mark_completed()
        for trial in failed:
            trial.mark_failed(reason="experiment failed")
        for p in self.pending:  # left running: Ax treats it as pending
            attach(p)

    def _metric_name(self, name: str) -> str:
        if name not in self._mname:
            self._mname[name] = f"y{len(self._mname)}"
        return self._mname[name]

    def _to_ax(self, params: dict) -> dict:
        out = {}
        for comp in self.space.compositions:
            free = [float(params[c]) for c in comp.components[:-1]]
            s = sum(free)
            if s > comp.total:  # rounding: keep the point inside Ax's constraint
                free = [v * comp.total / s * (1 - 1e-12) for v in free]
            out.update({self._pname[c]: v for c, v in zip(comp.components[:-1], free)})
        for p in self.space.parameters:
            if isinstance(p, FixedParameter) or p.name in self._implied or self._pname[p.name] in out:
                continue
            out[self._pname[p.name]] = params[p.name]
        return out

    def _from_ax(self, ax_params: dict) -> dict:
        back = {v: k for k, v in self._pname.items()}
        out = {back[k]: v for k, v in ax_params.items()}
        for comp in self.space.compositions:
            rest = comp.total - sum(float(out[c]) for c in comp.components[:-1])
            out[comp.components[-1]] = max(0.0, rest)
        for p in self.space.parameters:
            if isinstance(p, FixedParameter):
                out[p.name] = p.value
        return out

    # ------------------------------------------------------------------ asking
    def _suggest(self, n: int):
        n_init = int(self.options.get("n_init", DEFAULT_N_INIT))
        good = self.good_observations()
        if len(good) < n_init:
            rng = self.rng()
            why = Provenance(agent=self.name, reason=f"initial uniform design ({n_init} points before the model)")
            return [(p, why) for p in self.random_points(n, rng)]
        seed = int(np.random.default_rng([self.seed, self.n_seen]).integers(2**31))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            analytic = n == 1 and not self.pending and len(self.objectives) == 1 and not self._constraints
            client = self._client(seed, analytic)
            self._attach(client)
            trials = client.get_next_trials(max_trials=n)
            points = [self._from_ax(dict(trials[i])) for i in sorted(trials)]
            try:
                preds = client.predict(points=[self._to_ax(p) for p in points])
            except Exception:  # noqa: BLE001 - a prediction is informative, never fatal
                preds = [None] * len(points)
        back = {v: k for k, v in self._mname.items()}
        fit = _ax_loo_r2(client)
        out = []
        for i, p, pred in zip(sorted(trials), points, preds):
            gr = client._experiment.trials[i].generator_runs[0]
            meta = gr.gen_metadata or {}
            acq = meta.get("expected_acquisition_value")
            acq = float(np.ravel(acq)[0]) if acq is not None else None
            prov = Provenance(
                agent=self.name,
                model=f"Ax {gr._generator_key or 'BoTorch'} (SingleTaskGP)",
                acquisition="qLogNEHVI" if len(self.objectives) > 1 else "LogEI" if analytic else "qLogNEI",
                acquisition_value=acq,
                predicted_mean={back[k]: float(v[0]) for k, v in pred.items() if k in back} if pred else None,
                predicted_sd={back[k]: float(v[1]) for k, v in pred.items() if k in back} if pred else None,
                fit_loo_r2=fit,
                n_observations=len(good),
                reason=f"best acquisition value of Ax's model fitted to {len(good)} observations"
                + (f" with {len(self.pending)} pending" if self.pending else ""),
            )
            out.append((p, prov))
        return out


def _ax_loo_r2(client) -> float | None:
    """Leave-one-out R^2 of the GP Ax just fitted (the worst over its outputs); None if
    the model is not a plain GP."""
    from sdl.agents.gp import loo_r2

    try:
        model = client._generation_strategy.adapter.generator.surrogate.model
        models = list(getattr(model, "models", [model]))
        scores = [loo_r2(m) for m in models]
        scores = [v for v in scores if v is not None]
        return min(scores) if scores else None
    except Exception:  # noqa: BLE001 - fit quality is informative, never fatal
        return None


def pareto_front(values: Sequence[Sequence[float]], signs: Sequence[float]) -> list[int]:
    """Indices of the non-dominated rows (kept for compatibility: see
    :func:`sdl.agents.multiobjective.pareto_indices`)."""
    from sdl.agents.multiobjective import pareto_indices

    return pareto_indices(values, signs)

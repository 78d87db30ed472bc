"""A campaign: search space + objectives + agent + instrument + budget + stopping rule.

The runner is the closed loop of DESIGN.md: ask the agent, store the suggestions,
run each through the RunEngine (documents streamed to the store), reduce the run to
an observation, store it with the run's end in one transaction, tell the agent.

Crash safety: everything the loop knows is in the store. ``resume`` marks runs a
dead process left open as interrupted (their partial documents are kept), puts
their suggestions back in the queue, rebuilds the agent from the stored
observations, and carries on; a finished experiment is never run again.
"""

from __future__ import annotations

import logging
import math
import re
import signal
import threading
from typing import Any, Callable, Literal, Sequence

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from sdl.builtins import DEFAULT_INSTRUMENT
from sdl.errors import InvalidInput
from sdl.models import Observation, new_id
from sdl.reduction import reduce_run
from sdl.space import ChoiceParameter, FixedParameter, Objective, RangeParameter, SearchSpace, validation_message
from sdl.store import Store

log = logging.getLogger(__name__)


class StoppingRule(BaseModel):
    """Stop before the budget is spent: a target reached, or no progress for a while."""

    model_config = ConfigDict(extra="forbid")

    target: float | None = Field(None, description="stop once the best value reaches this (objective units)")
    patience: int | None = Field(None, ge=1, description="stop after this many experiments without improvement")


class CampaignSpec(BaseModel):
    """Everything needed to run (and re-run) a campaign. Stored with it, verbatim."""

    model_config = ConfigDict(extra="forbid")

    name: str = ""
    instrument: str = Field(DEFAULT_INSTRUMENT, description="a registered instrument (sdl instruments list)")
    plan: str = Field("", description="the instrument's plan for each point; default: its default plan")
    instrument_options: dict[str, Any] = Field(default_factory=dict)
    space: SearchSpace | None = Field(None, description="defaults to the instrument's")
    objectives: list[Objective] | None = Field(None, description="defaults to the instrument's")
    agent: str = "bo"
    agent_options: dict[str, Any] = Field(default_factory=dict)
    budget: int = Field(30, ge=1, le=100_000, strict=True, description="number of experiments")
    batch_size: int = Field(1, ge=1, le=64)
    seed: int = Field(0, ge=0)
    stopping: StoppingRule = Field(default_factory=StoppingRule)
    exposure: float | None = Field(None, gt=0, le=3600, description="detector exposure per measurement (s), for "
                                   "instruments whose plan takes one; default: the plan's own")
    time_scale: float = Field(0.0, ge=0, le=10, description="0: instant simulation, 1: real time")
    on_failure: Literal["continue", "stop"] = "continue"
    approve_before_run: bool = Field(False, description="service only: each agent suggestion waits for a "
                                     "proposal member's approval before it is queued")
    proposal: str = ""

    @field_validator("instrument")
    @classmethod
    def _known_instrument(cls, v: str) -> str:
        from sdl.instruments import check_instrument_name

        return check_instrument_name(v)

    @field_validator("agent")
    @classmethod
    def _known_agent(cls, v: str) -> str:
        from sdl.registry import check_agent

        return check_agent(v)

    def context(self) -> dict[str, Any]:
        """What the campaign says about every point (given to plans that take it)."""
        return {} if self.exposure is None else {"exposure": self.exposure}

    @model_validator(mode="after")
    def _objectives_named(self) -> "CampaignSpec":
        if self.objectives is not None and len(self.objectives) == 0:
            raise ValueError("objectives: give at least one, or leave out for the instrument's default")
        return self


def validate_spec(data: dict) -> CampaignSpec:
    """Parse a spec, turning pydantic errors into one :class:`InvalidInput` naming the field."""
    from pydantic import ValidationError

    try:
        return CampaignSpec.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"]) or "spec"
        msg = validation_message(err)
        ctx = err.get("ctx", {}).get("error")
        if isinstance(ctx, InvalidInput):
            raise ctx from None
        raise InvalidInput(loc, msg, err.get("input", ...)) from None


def refuse_workflow_campaign(row: Any) -> None:
    """Workflow campaigns have their own spec and runner (``sdl workflow run --resume``)."""
    if (row.spec or {}).get("kind") == "workflow":
        raise InvalidInput("campaign_id", "a workflow campaign: resume it with 'sdl workflow run --resume', see "
                           "its workflows with 'sdl workflow show'", row.id)


def plain_spec(row: Any) -> CampaignSpec:
    """The spec of a stored campaign that is not a workflow campaign."""
    refuse_workflow_campaign(row)
    return CampaignSpec.model_validate(row.spec)


def build_instrument(spec: CampaignSpec) -> Any:
    """The instrument a campaign runs on, as its runner builds it."""
    from sdl.instruments import make_instrument

    return make_instrument(spec.instrument, seed=spec.seed, time_scale=spec.time_scale,
                           n_slots=max(24, spec.budget + spec.batch_size), options=spec.instrument_options)


def check_plan(spec: CampaignSpec, instrument: Any) -> None:
    """An unknown plan, or an exposure the plan does not allow, is refused before anything runs."""
    plan = instrument.plan(spec.plan or None)
    for key, value in spec.context().items():
        if key in plan.options:
            plan.options[key].check(value)


def check_space_within(space: SearchSpace, limits: SearchSpace) -> None:
    """A campaign's own space stays inside its instrument's: the same parameters (a fixed one
    holds a parameter still), each range and value within the instrument's limits."""
    names = limits.names
    for i, prm in enumerate(space.parameters):
        if prm.name not in names:
            raise InvalidInput(f"space.parameters.{i}.name", f"not a parameter of the instrument; "
                               f"allowed: {names}", prm.name)
        lim = limits.parameter(prm.name)
        values = [prm.value] if isinstance(prm, FixedParameter) else \
            list(prm.values) if isinstance(prm, ChoiceParameter) else []
        for j, v in enumerate(values):  # every value the campaign could ask for, within the limits
            field = f"space.parameters.{i}." + ("value" if isinstance(prm, FixedParameter) else f"values.{j}")
            try:
                lim.check(v)
            except InvalidInput as exc:
                raise InvalidInput(field, f"outside the instrument's limits: {exc.message}", v) from None
        if isinstance(prm, RangeParameter) and not isinstance(lim, RangeParameter):
            raise InvalidInput(f"space.parameters.{i}.kind", f"the instrument takes {prm.name} as "
                               f"{lim.kind}, not a range", prm.kind)
        if isinstance(prm, RangeParameter) and isinstance(lim, RangeParameter):
            if prm.lower < lim.lower:
                raise InvalidInput(f"space.parameters.{i}.lower", f"below the instrument's limit "
                                   f"{lim.lower} {lim.units}".rstrip(), prm.lower)
            if prm.upper > lim.upper:
                raise InvalidInput(f"space.parameters.{i}.upper", f"above the instrument's limit "
                                   f"{lim.upper} {lim.units}".rstrip(), prm.upper)
    missing = [n for n in names if n not in space.names]
    if missing:
        raise InvalidInput("space.parameters", f"every instrument parameter is needed; missing {missing} "
                           "(use a fixed parameter to hold one)")
    if limits.pool is not None and space.pool is None:
        space.pool = limits.pool


def check_runnable(spec: CampaignSpec, instrument: Any) -> None:
    """What running ``spec`` on ``instrument`` would refuse, refused before the campaign is
    stored or started: the plan and its options, the space (within the instrument's limits),
    the objectives (ones it measures), and the agent with its options."""
    check_plan(spec, instrument)
    if spec.space is not None:
        check_space_within(spec.space, instrument.space)
    known = [o.name for o in instrument.objectives]
    for i, o in enumerate(spec.objectives or []):
        if o.name not in known:
            raise InvalidInput(f"objectives.{i}.name", f"{spec.instrument} measures {known}", o.name)
    check_agent_options(spec.agent, spec.space or instrument.space, spec.objectives or instrument.objectives,
                        spec.seed, spec.agent_options)
    constraints = spec.agent_options.get("outcome_constraints") or []
    for i, c in enumerate(constraints if isinstance(constraints, list) else []):
        metric = c.get("metric") if isinstance(c, dict) else None
        if metric not in known:  # the agent would wait for values that never come, and fail at its first fit
            raise InvalidInput(f"agent_options.outcome_constraints.{i}.metric",
                               f"{spec.instrument} measures {known}; constrain one of those", metric)


def check_local(spec: CampaignSpec) -> None:
    """What only the service can run is refused here: nobody approves suggestions locally."""
    if spec.approve_before_run:
        raise InvalidInput("approve_before_run", "needs people to approve each suggestion: run this campaign "
                           "through the service (sdl serve), not locally", True)


def check_agent_options(agent: str, space: SearchSpace, objectives: list[Objective], seed: int,
                        options: dict) -> None:
    """Build the agent once and drop it: agents check their options when they are built, not
    at their first fit, so a campaign spec's agent is refused before anything is stored."""
    from sdl.registry import make_agent

    try:
        make_agent(agent, space, objectives, seed=seed, **options)
    except InvalidInput as exc:
        if exc.field.split(".")[0] not in options:
            raise
        # an option's own parser names the option ("exposure"): say where it sits in the spec
        raise exc.under("agent_options") from None


class Progress:
    """What the runner reports as it goes (the CLI draws a progress bar from it)."""

    def started(self, total: int, done: int) -> None: ...

    def experiment_done(self, done: int, total: int, observation: Observation, best: float | None) -> None: ...


class CampaignRunner:
    """Runs one stored campaign to its budget or stopping rule."""

    @staticmethod
    def _chosen_exposure(suggestion: Any) -> dict[str, float]:
        """``{"exposure": s}`` when the agent chose this point's exposure (sdl.agents.exposure)."""
        chosen = getattr(suggestion.provenance, "exposure", None)
        return {} if chosen is None else {"exposure": float(chosen)}

    def __init__(self, store: Store, campaign_id: str, *, progress: Progress | None = None,
                 run_engine: Any = None, instrument: Any = None):
        self.store = store
        self.campaign_id = campaign_id
        row = store.campaign(campaign_id)
        self.spec = plain_spec(row)
        self.instrument = instrument or build_instrument(self.spec)
        check_plan(self.spec, self.instrument)
        self.space: SearchSpace = self.spec.space or self.instrument.space
        self.objectives: list[Objective] = self.spec.objectives or self.instrument.objectives
        self.progress = progress or Progress()
        # Ctrl-C: set by the RunEngine's SIGINT handler (_PauseOnSigint), read between experiments
        self._interrupt = threading.Event()
        self.RE = run_engine or _make_run_engine(self._interrupt)
        self._current_run: str | None = None
        self._attempt_run: str | None = None

    # ----------------------------------------------------------------- the loop
    def run(self) -> str:
        """Run until done; returns the final campaign status."""
        from bluesky.utils import RunEngineInterrupted

        check_local(self.spec)
        interrupted = self.store.recover_interrupted(self.campaign_id)
        if interrupted:
            log.warning("campaign %s: %d interrupted run(s) kept and their points requeued", self.campaign_id,
                        len(interrupted))
        agent = self.build_agent()

        self.store.set_campaign_status(self.campaign_id, "running")
        self._interrupt.clear()
        self.progress.started(self.spec.budget, self._n_finished())
        unsub = self.RE.subscribe(self._on_document)
        try:
            while True:
                reason = self._stop_reason(agent)
                if reason:
                    self.store.set_campaign_status(self.campaign_id, "completed", reason)
                    return "completed"
                row = self._next_pending(agent)
                ok = self._run_one(row)
                if self._interrupt.is_set():  # Ctrl-C as the run ended: stop between experiments
                    raise KeyboardInterrupt
                if not ok and self.spec.on_failure == "stop":
                    self.store.set_campaign_status(self.campaign_id, "failed", "an experiment failed; policy: stop")
                    return "failed"
                obs = self.store.observations(self.campaign_id)
                agent.tell([o for o in obs if o.suggestion_id == row.id])
        except (KeyboardInterrupt, RunEngineInterrupted):
            self._abort_current("interrupted by the user")
            self.store.set_campaign_status(self.campaign_id, "interrupted", "interrupted; resume to continue")
            return "interrupted"
        finally:
            self.RE.unsubscribe(unsub)

    def build_agent(self, observations: list[Observation] | None = None):
        """The campaign's agent, told ``observations`` (default: every stored one) and the
        pending points: after a restart it carries on as if nothing had happened."""
        from sdl.registry import make_agent

        agent = make_agent(self.spec.agent, self.space, self.objectives, seed=self.spec.seed,
                           **self.spec.agent_options)
        if observations is None:
            observations = self.store.observations(self.campaign_id)
        if observations:
            agent.tell(observations)
        pending = self.store.suggestions(self.campaign_id, status="pending")
        if pending:
            agent.add_pending([p.params for p in pending])
        return agent

    def _next_pending(self, agent):
        pending = self.store.suggestions(self.campaign_id, status="pending")
        if pending:
            return pending[0]
        room = self.spec.budget - self._n_finished()
        n = max(1, min(self.spec.batch_size, room))
        suggestions = agent.ask(n)
        for s in suggestions:
            # An agent's point crosses a boundary too: refuse it before it reaches a device.
            s.params = self.space.validate_point(s.params)
        self.store.add_suggestions(self.campaign_id, suggestions)
        return self.store.suggestions(self.campaign_id, status="pending")[0]

    def _run_one(self, row) -> bool:
        """Run one suggestion through the RunEngine; store the run's end and observation."""
        suggestion = Store.to_suggestion(row)
        attempt = row.attempts + 1
        sample_id = f"{self.campaign_id[:8]}-{row.seq:04d}" + (f"r{attempt - 1}" if attempt > 1 else "")
        md = {
            "campaign_id": self.campaign_id,
            "proposal": self.spec.proposal,
            "suggestion_seq": row.seq,
            "attempt": attempt,
            "provenance": suggestion.provenance.model_dump(),
        }
        plan = self.instrument.step_plan(
            suggestion, slot=row.seq % max(24, self.spec.budget + self.spec.batch_size) + 1,
            sample_id=sample_id, md=md, plan=self.spec.plan or None,
            # an agent that chooses the exposure per point (option "exposure") says so in the provenance
            **{**self.spec.context(), **self._chosen_exposure(suggestion)},
        )
        self._current_suggestion = suggestion
        self._attempt_run = None  # the run this attempt opened, if it got that far
        try:
            self.RE(plan)
        except Exception as exc:  # device fault, bad point: the campaign records it and goes on
            from bluesky.utils import RunEngineInterrupted

            if isinstance(exc, RunEngineInterrupted):
                raise
            log.warning("experiment %s failed: %s", row.seq, exc)
            uid = self._current_run or self._attempt_run
            if uid is None:  # failed before the run opened: record a run for the failure
                uid = new_id()
                self.store.start_run(uid, self.campaign_id, row.id)
            self.store.finish_run(
                uid, "failed", reason=str(exc),
                observation=Observation(suggestion_id=row.id, params=row.params, ok=False,
                                        run_uid=uid, extra={"error": str(exc)}),
                campaign_id=self.campaign_id,
            )
            self._current_run = None
            self._report()
            return False
        return True

    # -------------------------------------------------------- documents → store
    def _on_document(self, name: str, doc: dict) -> None:
        if name == "start":
            self._current_run = self._attempt_run = doc["uid"]
            self.store.start_run(doc["uid"], self.campaign_id, doc.get("suggestion_id"))
        if self._current_run is None:
            return
        self.store.add_document(self._current_run, name, doc)
        if name == "stop":
            uid, self._current_run = self._current_run, None
            if doc.get("exit_status") == "success":
                self._finish_success(uid)
            # failures and aborts are recorded by the caller, which has the exception

    def _finish_success(self, uid: str) -> None:
        docs = self.store.documents(uid)
        start = docs[0][1]
        try:
            values = reduce_run(docs)
        except Exception as exc:
            self.store.finish_run(uid, "failed", reason=f"reduction failed: {exc}",
                                  observation=Observation(suggestion_id=start.get("suggestion_id"),
                                                          params=start.get("params", {}), ok=False, run_uid=uid,
                                                          extra={"error": str(exc)}),
                                  campaign_id=self.campaign_id)
            return
        obs = Observation(suggestion_id=start.get("suggestion_id"), params=start.get("params", {}),
                          values=values, run_uid=uid, extra={"sample_id": start.get("sample_id"),
                                                             "exposure": start.get("exposure")})
        if self.instrument.truth is not None:
            try:
                obs.extra["truth"] = float(self.instrument.truth(obs.params))
            except Exception:  # truth is a diagnostic; never fail a run on it
                pass
        self.store.finish_run(uid, "success", observation=obs, campaign_id=self.campaign_id)
        self._report()

    def _abort_current(self, reason: str) -> None:
        uid = self._current_run or self._attempt_run
        if self.RE.state != "idle":
            try:
                self.RE.abort(reason=reason)
            except Exception as exc:  # pragma: no cover - abort of an already-stopping RE
                log.warning("abort: %s", exc)
        self._current_run = None
        # the run this attempt opened, unless it ended well: kept, marked, its point requeued on resume
        if uid is not None and any(r.uid == uid and r.status == "running" for r in self.store.runs(self.campaign_id)):
            self.store.finish_run(uid, "interrupted", reason=reason)

    # ------------------------------------------------------------ bookkeeping
    def _n_finished(self) -> int:
        return len(self.store.observations(self.campaign_id))

    def best(self) -> float | None:
        return best_value(self.store.observations(self.campaign_id), self.objectives[0])

    def _report(self) -> None:
        obs = self.store.observations(self.campaign_id)
        self.progress.experiment_done(len(obs), self.spec.budget, obs[-1], best_value(obs, self.objectives[0]))

    def _stop_reason(self, agent: Any = None) -> str:
        """Why the campaign ends now ("" to go on); ``agent``, told every observation, may judge
        the target from its model (:class:`sdl.agents.base.Recommender`)."""
        obs = self.store.observations(self.campaign_id)
        if len(obs) >= self.spec.budget:
            return f"budget of {self.spec.budget} experiments spent"
        pool = self.space.pool
        if pool is not None and len(obs) >= len(pool) \
                and len({self.space.pool_index(o.params) for o in obs}) >= len(pool):
            return f"every one of the pool's {len(pool)} points measured (budget {self.spec.budget})"
        objective = self.objectives[0]
        best = best_value(obs, objective)
        rule = self.spec.stopping
        if rule.target is not None and best is not None and objective.sign * (best - rule.target) >= 0:
            # values of different noise (an agent choosing exposures): the model's estimate at its
            # recommended point must reach the target, not one lucky short exposure
            recommend = getattr(agent, "recommend", None)
            picked = recommend() if recommend is not None else None
            if picked is None:
                return f"target {rule.target} reached (best {best:.4g})"
            point, estimate = picked
            point = {k: float(f"{v:.4g}") if isinstance(v, float) else v for k, v in point.items()}
            if objective.sign * (estimate - rule.target) >= 0:
                return (f"target {rule.target} reached (the model's estimate {estimate:.4g} at the recommended "
                        f"point {point}; best measured {best:.4g})")
        if rule.patience is not None and len(obs) > rule.patience:
            trace = best_trace(obs, objective)
            if trace[-1] == trace[-1 - rule.patience]:
                return f"no improvement in {rule.patience} experiments"
        return ""


def best_value(observations: Sequence[Observation], objective: Objective) -> float | None:
    vals = [o.values.get(objective.name) for o in observations if o.ok]
    vals = [v for v in vals if v is not None and math.isfinite(v)]
    if not vals:
        return None
    return max(vals) if objective.direction == "maximize" else min(vals)


def best_trace(observations: Sequence[Observation], objective: Objective) -> list[float | None]:
    """Best value so far after each experiment (None until the first success)."""
    out: list[float | None] = []
    best: float | None = None
    for o in observations:
        v = o.values.get(objective.name) if o.ok else None
        if v is not None and math.isfinite(v) and (best is None or objective.sign * (v - best) > 0):
            best = v
        out.append(best)
    return out


def check_campaign_id(campaign_id: str) -> None:
    """A campaign id a user chose: it names files and URLs, so a plain word."""
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", campaign_id):
        raise InvalidInput("campaign_id", "1-64 letters, digits, '_' or '-'", campaign_id)


def create_campaign(store: Store, spec: CampaignSpec | dict, campaign_id: str | None = None,
                    instrument: Any = None) -> str:
    """Validate and store a new campaign; returns its id. ``instrument`` (the one it will run
    on, :func:`build_instrument`): also refuse what running it there would refuse
    (:func:`check_runnable`) before storing it."""
    if not isinstance(spec, (CampaignSpec, dict)):
        raise InvalidInput("spec", "a campaign spec is a JSON object {\"instrument\": ..., \"agent\": ...}",
                           type(spec).__name__)
    spec = spec if isinstance(spec, CampaignSpec) else validate_spec(spec)
    if campaign_id is not None:
        check_campaign_id(campaign_id)
        try:
            store.campaign(campaign_id)
        except InvalidInput:
            pass  # free
        else:
            raise InvalidInput("campaign_id", "a campaign with this id exists already", campaign_id)
    if instrument is not None:
        check_runnable(spec, instrument)
    campaign_id = campaign_id or new_id()
    store.create_campaign(campaign_id, spec.name, spec.model_dump(mode="json"))
    return campaign_id


class _PauseOnSigint:
    """Ctrl-C during a run asks the RunEngine for an immediate pause, from a helper thread.

    Without a handler bluesky turns a KeyboardInterrupt into an exception injected
    into its own thread, which can land inside a store write (a document callback)
    and leave a database connection mid-query. A paused run raises
    ``RunEngineInterrupted`` in the campaign loop, which aborts it (the plan's
    cleanup closes the shutter) and stops; a Ctrl-C as the run ends is seen by the
    loop through ``interrupt``. Outside a run Ctrl-C is the ordinary KeyboardInterrupt.
    """

    def __init__(self, RE, interrupt: threading.Event):
        self.RE, self.interrupt = RE, interrupt
        self._wake = threading.Event()
        self._installed = False

    def __enter__(self):
        if threading.current_thread() is not threading.main_thread():
            return self  # signal handlers belong to the main thread; elsewhere nothing changes
        self._installed, self._done = True, False
        self._original = signal.getsignal(signal.SIGINT)
        threading.Thread(target=self._pause_when_asked, name="sdl-sigint", daemon=True).start()

        def handler(signum, frame):  # keep it tiny: set flags, wake the helper
            self.interrupt.set()
            self._wake.set()

        signal.signal(signal.SIGINT, handler)
        return self

    def _pause_when_asked(self) -> None:
        from bluesky.utils import TransitionError

        while True:
            self._wake.wait()
            self._wake.clear()
            if self._done:
                return
            try:
                self.RE.request_pause(defer=False)
            except (TransitionError, RuntimeError) as exc:  # the run is ending: the loop stops after it
                log.debug("pause on Ctrl-C: %s", exc)

    def __exit__(self, *exc) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, self._original)
            self._installed, self._done = False, True
            self._wake.set()


def _make_run_engine(interrupt: threading.Event | None = None):
    from bluesky import RunEngine

    interrupt = interrupt if interrupt is not None else threading.Event()
    return RunEngine({}, context_managers=[lambda RE: _PauseOnSigint(RE, interrupt)])


Callback = Callable[[str, dict], None]

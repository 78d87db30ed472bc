"""A campaign whose every step is a workflow: the agent asks for a point, the point
becomes a workflow (make -> measurements on other stations -> reduction), the
workflow's reduced values become the observation the agent is told.

Everything is in the store: suggestions and observations in the record's tables (so
reports, replay of runs and the RO-Crate see them), workflows and samples in the
workflow tables. The runner keeps no state of its own: killed and started again it
finds the workflows in flight, the suggestions without a workflow, the workflows that
ended without an observation, and carries on (each observation is written once: the
suggestion id is unique in the observations table).
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import os
import socket
import subprocess
import sys
import threading
import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from sqlalchemy import select, update
from sqlalchemy import exc as sa_exc

from sdl.campaign import StoppingRule, best_value, check_agent_options
from sdl.errors import InvalidInput
from sdl.models import Observation, new_id
from sdl.space import Objective, SearchSpace
from sdl.store import ObservationRow, Store, SuggestionRow, jsonable
from sdl.workflows.engine import Engine
from sdl.workflows.graph import WorkflowSpec, schema_instrument, validate_workflow
from sdl.workflows.heartbeat import Heartbeat
from sdl.workflows.tables import WorkflowRow

log = logging.getLogger(__name__)


class WorkflowCampaignSpec(BaseModel):
    """A campaign of workflows. Stored with it (``kind: workflow``), verbatim."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["workflow"] = "workflow"
    name: str = ""
    workflow: dict = Field(..., description="the workflow of every step (see sdl.workflows.graph)")
    space: SearchSpace | None = Field(None, description="defaults to the make task's instrument's")
    objectives: list[Objective] | None = Field(None, description="defaults to the reduce task's objectives, "
                                               "the first maximised")
    agent: str = "bo"
    agent_options: dict[str, Any] = Field(default_factory=dict)
    budget: int = Field(12, ge=1, le=100_000, description="number of workflows (samples)")
    parallel: int = Field(2, ge=1, le=64, description="workflows in flight at once")
    seed: int = Field(0, ge=0)
    stopping: StoppingRule = Field(default_factory=StoppingRule)
    time_scale: float = Field(0.0, ge=0, le=10)
    instrument_options: dict[str, Any] = Field(default_factory=dict)
    proposal: str = ""
    cascade: dict[str, Any] | None = Field(None, description="cheap before expensive, see sdl.workflows.cascade: "
                                           "{task, cheap, objective, warmup, kappa, max_held}")

    @field_validator("workflow")
    @classmethod
    def _workflow(cls, v: dict) -> dict:
        return validate_workflow(v).model_dump(mode="json")

    @field_validator("agent")
    @classmethod
    def _agent(cls, v: str) -> str:
        from sdl.registry import check_agent

        return check_agent(v)

    @model_validator(mode="after")
    def _objectives(self) -> "WorkflowCampaignSpec":
        wf = WorkflowSpec.model_validate(self.workflow)
        red = next((t for t in wf.tasks if t.kind == "reduce"), None)
        if red is None:
            raise ValueError("workflow: a campaign's workflow needs a reduce task (its objectives)")
        allowed = list(red.objectives)
        if self.cascade is not None:
            from sdl.workflows.cascade import CascadeSpec

            try:
                c = CascadeSpec.model_validate(self.cascade)
            except ValidationError as exc:
                e = exc.errors()[0]
                raise ValueError(f"cascade.{'.'.join(map(str, e['loc']))}: {e['msg']}") from None
            for f in ("cheap", "objective"):
                if getattr(c, f) not in red.objectives:
                    raise ValueError(f"cascade.{f}: not an objective of the reduce task; allowed: {allowed}")
            if c.task not in [t.name for t in wf.tasks] or not wf.task(c.task).gate:
                raise ValueError(f"cascade.task: must name a measure task with gate: true; got {c.task!r}")
            allowed.append(f"{c.objective}_est")
        if self.space is not None:
            make = next(t for t in wf.tasks if t.kind == "make")
            names = schema_instrument(make.instrument).space.names
            if sorted(self.space.names) != sorted(names):
                raise ValueError(f"space: must have the parameters of {make.instrument} ({names}), narrowed if "
                                 f"you like; got {self.space.names}")
        if self.objectives is None:
            first = f"{self.cascade['objective']}_est" if self.cascade else next(iter(red.objectives))
            self.objectives = [Objective(name=first, direction="maximize")]
        for o in self.objectives:
            if o.name not in allowed:
                raise ValueError(f"objectives.{o.name}: not an objective of the reduce task; allowed: "
                                 f"{sorted(allowed)}")
        return self

    @property
    def spec(self) -> WorkflowSpec:
        return WorkflowSpec.model_validate(self.workflow)

    def search_space(self) -> SearchSpace:
        if self.space is not None:
            return self.space
        make = next(t for t in self.spec.tasks if t.kind == "make")
        return schema_instrument(make.instrument).space


def validate_campaign(data: dict) -> WorkflowCampaignSpec:
    """The spec, with its agent built once (its options are checked when it is built)."""
    try:
        spec = WorkflowCampaignSpec.model_validate(data)
    except ValidationError as exc:
        e = exc.errors()[0]
        ctx = e.get("ctx", {}).get("error")
        if isinstance(ctx, InvalidInput):
            raise ctx from None
        loc = ".".join(str(p) for p in e["loc"]) or "spec"
        raise InvalidInput(loc, e["msg"].removeprefix("Value error, "), e.get("input", ...)) from None
    check_agent_options(spec.agent, spec.search_space(), list(spec.objectives or []), spec.seed, spec.agent_options)
    return spec


def create_workflow_campaign(store: Store, spec: dict | WorkflowCampaignSpec, campaign_id: str | None = None) -> str:
    spec = spec if isinstance(spec, WorkflowCampaignSpec) else validate_campaign(spec)
    cid = campaign_id or new_id()
    store.create_campaign(cid, spec.name, spec.model_dump(mode="json"))
    return cid


class WorkflowCampaignRunner:
    """Runs a workflow campaign to its budget. Workers: ``threads`` (one per station in this
    process), ``processes`` (one ``sdl workflow worker`` process per station), or ``none``
    (they run elsewhere: other hosts, a service)."""

    def __init__(self, store: Store, campaign_id: str, *, lease_s: float = 10.0, poll_s: float = 0.05):
        self.store = store
        self.campaign_id = campaign_id
        row = store.campaign(campaign_id)
        if (row.spec or {}).get("kind") != "workflow":
            raise InvalidInput("campaign_id", "not a workflow campaign", campaign_id)
        self.cspec = WorkflowCampaignSpec.model_validate(row.spec)
        self.engine = Engine(store, lease_s=lease_s)
        self.space = self.cspec.search_space()
        self.objectives = list(self.cspec.objectives or [])
        self.poll_s = poll_s
        self.agent: Any = None
        self.told: set[str] = set()
        self._halt = threading.Event()
        self._last_sweep = 0.0
        #: who holds the campaign while this runner runs it (the store's runner lease)
        self.holder = f"runner:{os.getpid()}@{socket.gethostname()}"
        self._token = new_id()
        self._renewed: float | None = None
        #: renews the lease while the loop steps (a step may take longer than a lease: the
        #: agent's fit on a long campaign, a loaded machine)
        self._heartbeat: Heartbeat | None = None
        #: how long to wait while another live runner holds the campaign (None: for as long
        #: as it takes, as a service's runner does; the CLI gives up after a few leases)
        self.standby_s: float | None = None
        #: why the proposal's allocation refused the next workflow (the campaign then stops)
        self.spent = ""
        self.cascade = None
        if self.cspec.cascade:
            from sdl.workflows.cascade import Cascade

            self.cascade = Cascade(self.cspec, self.engine)

    # ---------------------------------------------------------------- the loop
    def run(self, workers: Literal["threads", "processes", "none"] = "threads", *, timeout: float = 3600.0,
            store_url: str | None = None) -> str:
        from sdl.registry import make_agent

        from sdl.service.dispatch import retry

        if workers not in ("threads", "processes", "none"):
            raise InvalidInput("workers", "allowed: 'threads', 'processes', 'none'", workers)
        if not timeout > 0:
            raise InvalidInput("timeout", "must be above 0 seconds", timeout)

        if not self._take_the_campaign():
            return "stopped"  # halted while another runner held it
        self._start_heartbeat()
        deadline = time.monotonic() + timeout
        stop = threading.Event()
        try:
            self.agent = make_agent(self.cspec.agent, self.space, self.objectives, seed=self.cspec.seed,
                                    **self.cspec.agent_options)
            retry(lambda: self.store.set_campaign_status(self.campaign_id, "running"), what="campaign status")
            started = self._start_workers(workers, stop, store_url)
        except BaseException:
            self._let_go()  # no heartbeat left renewing a campaign nobody runs
            raise
        try:
            from sdl.service.dispatch import is_disconnect

            while True:
                if self._halt.is_set():  # the process is stopping: the campaign stays running, to resume
                    return "stopped"
                if self._heartbeat.lost.is_set():
                    log.warning("campaign %s: another runner took it over (this one stopped renewing in "
                                "time); this one stops", self.campaign_id)
                    return "stopped"
                try:
                    reason = self.step()
                except Exception as exc:  # noqa: BLE001 - a database restart: carry on when it is back
                    if not is_disconnect(exc):
                        raise
                    log.warning("campaign %s: database unavailable (%s); retrying", self.campaign_id,
                                type(exc).__name__)
                    time.sleep(0.5)
                    continue
                if reason:
                    status = "stopped" if reason == self.spent else "completed"  # stopped: the allocation
                    self._let_go()
                    retry(lambda: self.store.set_campaign_status(self.campaign_id, status, reason),
                          what="campaign status")
                    return status
                if time.monotonic() > deadline:
                    self._let_go()
                    self.store.set_campaign_status(self.campaign_id, "interrupted", f"timeout after {timeout:g} s")
                    return "interrupted"
                time.sleep(self.poll_s)
        except KeyboardInterrupt:
            self._let_go()
            self.store.set_campaign_status(self.campaign_id, "interrupted", "interrupted; resume to continue")
            return "interrupted"
        finally:
            stop.set()
            for w in started:
                _stop(w)
            self._let_go()

    # ---------------------------------------------------------------- one runner per campaign
    def _take_the_campaign(self) -> bool:
        """Hold the campaign's runner lease (``runner:CAMPAIGN`` in the store), so that a
        service resuming its running campaigns and a CLI runner never drive one campaign
        together. Waits while a live runner holds it (its lease is renewed); a dead one's
        lease expires (or, on this host, its process is gone) and is taken over. False if
        halted meanwhile; :class:`~sdl.errors.InvalidInput` after ``standby_s`` (if set)."""
        said, t0 = False, time.monotonic()
        while not self._halt.is_set():
            other = self._hold()
            if other is None:
                return True
            if not said:
                log.warning("campaign %s: runner %s holds it until %s; waiting for it to stop renewing",
                            self.campaign_id, other[0], other[1])
                said = True
            if self.standby_s is not None and time.monotonic() > t0 + self.standby_s:
                raise InvalidInput("campaign_id", f"another runner ({other[0]}) is running this campaign and "
                                   f"renews its lease (until {other[1]}); stop it first", self.campaign_id)
            self._halt.wait(min(1.0, self.engine.lease_s / 4))
        return False

    def _hold(self) -> tuple[str, str] | None:
        """Take or renew the lease: None when this runner holds it, else (holder, expiry)."""
        from sdl.service.dispatch import retry

        return retry(self._hold_once, what="the campaign's runner lease")

    def _hold_once(self) -> tuple[str, str] | None:
        from sdl.workflows import resources as res

        with self.store.session() as s:
            exp = res.now(s) + dt.timedelta(seconds=self.engine.lease_s)
            cur = res.try_hold_runner(s, self.campaign_id, self.holder, self._token, exp, _holder_gone)
            out = None if cur is None else (cur.holder, cur.expires_at.isoformat() if cur.expires_at else "")
        if out is None:
            self._renewed = time.monotonic()
        return out

    def _start_heartbeat(self) -> None:
        """Renew the lease three times per lease in a thread of its own, so that a long step
        (the loop renewed it between steps: a 2 s lease was lost to a step slowed by a loaded
        machine) does not hand the campaign to a second runner; ``lost`` is set if another
        runner holds it all the same (this one was away longer than a lease)."""
        self._heartbeat = Heartbeat(lambda: self._hold_once() is None, self.engine.lease_s / 3,
                                    f"sdl-runner-lease-{self.campaign_id[:8]}").start()

    def _let_go(self) -> None:
        from sdl.workflows import resources as res

        if self._heartbeat is not None:  # first: a beat after the release would take the lease again
            self._heartbeat.stop()
        if self._renewed is None:
            return
        try:
            with self.store.session() as s:
                res.release_runner(s, self.campaign_id, self._token)
            self._renewed = None
        except Exception:  # noqa: BLE001 - the database is away: the lease expires on its own
            log.warning("campaign %s: could not release the runner lease; it expires in %g s",
                        self.campaign_id, self.engine.lease_s)

    def halt(self) -> None:
        """Stop the loop without changing the campaign's status (a service shutting down)."""
        self._halt.set()

    def step(self) -> str:
        """Record ended workflows, submit new ones; the stop reason when the campaign is done."""
        if time.monotonic() - self._last_sweep > self.engine.lease_s / 2:  # locks of dead workers, even if
            self._last_sweep = time.monotonic()                           # no worker is left to sweep
            self.engine.sweep()
        self._record_ended()
        obs = self.store.observations(self.campaign_id)
        new = [o for o in obs if o.suggestion_id not in self.told]
        if new and self.agent is not None:
            self.agent.tell(new)
            self.told |= {o.suggestion_id for o in new}
            if self.cascade is not None:
                self.cascade.tell(new)
        if self.cascade is not None:
            self.cascade.decide(self.agent, self.campaign_id, obs)
        reason = self._stop_reason(obs) or self.spent
        if reason:
            running = self.engine.workflows(self.campaign_id, status="running")
            if not running:
                return reason
            if self.cspec.stopping.target is not None and len(obs) < self.cspec.budget:
                for wf in running:  # target reached: the rest is not needed
                    self.engine.cancel(wf.id, reason)
            return ""
        from sdl.workflows.fairqueue import AllocationSpent

        try:
            self._submit_new(len(obs))
        except AllocationSpent as exc:  # as a service campaign: no more steps; those in flight end
            log.warning("campaign %s: %s", self.campaign_id, exc)
            self.spent = str(exc)
        return ""

    def _stop_reason(self, obs: list[Observation]) -> str:
        if len(obs) >= self.cspec.budget:
            return f"budget of {self.cspec.budget} workflows spent"
        o = self.objectives[0]
        best = best_value(obs, o)
        t = self.cspec.stopping.target
        if t is not None and best is not None and o.sign * (best - t) >= 0:
            return f"target {t} reached (best {best:.4g})"
        return ""

    def _submit_new(self, n_obs: int) -> None:
        wfs = self.engine.workflows(self.campaign_id)
        if self.agent is not None and any(w.status != "running" and w.suggestion_id not in self.told for w in wfs):
            # one ended after this step recorded the ended ones: record it (next step) before
            # asking again, so the agent sees it and a reached target submits nothing more
            return
        with_wf = {w.suggestion_id for w in wfs}
        running = [w for w in wfs if w.status == "running"]
        orphans = [s for s in self.store.suggestions(self.campaign_id, status="pending") if s.id not in with_wf]
        for sug in orphans:  # stored, then the runner died before its workflow was: submit it now
            self._submit(sug.id, sug.params)
            running.append(None)  # type: ignore[arg-type]
        pending = [w.params for w in running if w is not None]
        # every workflow submitted ends in one observation: count them all, also one that ended
        # after this step recorded observations (neither observed nor running yet: counting only
        # those two ran the campaign one workflow past its budget)
        spent = max(n_obs, len(with_wf)) + len(orphans)
        room = min(self.cspec.parallel - len(running), self.cspec.budget - spent)
        if room <= 0:
            return
        if self.agent is None:
            return
        if pending:
            self.agent.add_pending(pending)
        suggestions = self.agent.ask(room)
        for s in suggestions:
            s.params = self.space.validate_point(s.params)
        self.store.add_suggestions(self.campaign_id, suggestions)
        for s in suggestions:
            self._submit(s.id, s.params)

    def _submit(self, suggestion_id: str, params: dict) -> str:
        wid = self.engine.submit(self.cspec.workflow, params, proposal_id=self.cspec.proposal,
                                 campaign_id=self.campaign_id, suggestion_id=suggestion_id)
        with self.store.session() as s:
            s.execute(update(SuggestionRow).where(SuggestionRow.id == suggestion_id).values(status="running"))
        return wid

    def _record_ended(self) -> None:
        """One observation per ended workflow (written once, with its suggestion's end)."""
        with self.store.session() as s:
            seen = set(s.scalars(select(ObservationRow.suggestion_id).where(
                ObservationRow.campaign_id == self.campaign_id)))
            ended = list(s.scalars(select(WorkflowRow).where(WorkflowRow.campaign_id == self.campaign_id,
                                                             WorkflowRow.status != "running")
                                   .order_by(WorkflowRow.finished_at, WorkflowRow.id)))
        for wf in ended:
            if wf.suggestion_id in seen or wf.suggestion_id is None:
                continue
            values = {k: float(v) for k, v in ((wf.result or {}).get("values") or {}).items()
                      if v is not None and math.isfinite(float(v))}
            extra_c: dict[str, Any] = {}
            if self.cascade is not None and wf.status == "done":
                est, source = self.cascade.estimate(self.store.observations(self.campaign_id), values)
                if est is not None:
                    values[f"{self.cascade.spec.objective}_est"] = float(est)
                extra_c = {"estimate_source": source}
            ok = wf.status == "done" and all(o.name in values for o in self.objectives)
            runs = (wf.result or {}).get("runs", {})
            extra = {"workflow_id": wf.id, "workflow_status": wf.status, "runs": runs, "message": wf.message,
                     **extra_c}
            view = self.engine.workflow(wf.id)
            sample = next((t["sample_id"] for t in view["tasks"] if t["sample_id"]), None)
            extra["sample_id"] = sample
            extra["measured"] = sorted(t["name"] for t in view["tasks"] if t["kind"] == "measure"
                                       and t["status"] == "done")
            if not ok:
                extra["error"] = wf.message or f"objectives missing: {[o.name for o in self.objectives]}"
            try:
                with self.store.session() as s:
                    s.add(ObservationRow(campaign_id=self.campaign_id, suggestion_id=wf.suggestion_id,
                                         run_uid=next(iter(runs.values()), None), params=jsonable(wf.params),
                                         values=jsonable(values), ok=ok, extra=jsonable(extra)))
                    s.execute(update(SuggestionRow).where(SuggestionRow.id == wf.suggestion_id)
                              .values(status="done" if ok else "failed"))
            except sa_exc.IntegrityError:  # another runner wrote it meanwhile
                pass

    # ---------------------------------------------------------------- workers
    def _start_workers(self, how: str, stop: threading.Event, store_url: str | None) -> list:
        stations = self.cspec.spec.instruments
        if how == "none":
            return []
        if how == "threads":
            from sdl.workflows.worker import TaskWorker

            out = []
            for i, name in enumerate(stations):
                w = TaskWorker(self.store, name, lease_s=self.engine.lease_s, seed=self.cspec.seed + i, poll_s=0.02,
                               time_scale=self.cspec.time_scale, options=self.cspec.instrument_options)
                th = threading.Thread(target=w.run, name=f"wf-worker-{name}", daemon=True)
                th.start()
                out.append((w, th))
            return out
        if how == "processes":
            return [spawn_worker(store_url or self.store.url, name, lease_s=self.engine.lease_s,
                                 seed=self.cspec.seed + i, time_scale=self.cspec.time_scale,
                                 options=self.cspec.instrument_options)
                    for i, name in enumerate(stations)]
        raise InvalidInput("workers", "allowed: threads, processes, none", how)


def spawn_worker(store_url: str, instrument: str, *, lease_s: float = 10.0, seed: int = 0, time_scale: float = 0.0,
                 options: dict | None = None, **popen: Any) -> subprocess.Popen:
    """An ``sdl workflow worker`` process for one station."""
    import json

    cmd = [sys.executable, "-m", "sdl.workflows.cli", "worker", instrument, "--store", store_url,
           "--lease", str(lease_s), "--seed", str(seed), "--time-scale", str(time_scale),
           "--options", json.dumps(options or {})]
    return subprocess.Popen(cmd, **popen)


def _stop(w: Any) -> None:
    if isinstance(w, subprocess.Popen):
        w.terminate()
        try:
            w.wait(10)
        except subprocess.TimeoutExpired:
            w.kill()
            w.wait()
    else:
        worker, th = w
        worker.stop()
        th.join(30)


def _holder_gone(holder: str) -> bool:
    """A runner on this host whose process has ended (its lease need not be waited out)."""
    try:
        pid_s, host = holder.removeprefix("runner:").split("@", 1)
        pid = int(pid_s)
    except ValueError:
        return False
    if host != socket.gethostname() or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False

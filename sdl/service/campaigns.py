"""Campaigns run by the service: the closed loop, one queued step at a time.

The planner thread keeps every running campaign fed: when a campaign has no step in
the queue, it checks the stopping rule, asks the agent (only when no stored
suggestion is pending) and queues the next pending suggestion as an item of the
campaign's proposal. The instrument's worker -- a thread of this service or an ``sdl
worker`` process on another host -- runs the step, stores its documents, reduces the
run to the observation (a pure function of the documents) and stores the observation
with the run's end and the item's end in one transaction. The planner then tells the
agent every observation it has not told yet (read from the store, so it does not matter
which process measured it) and publishes it on the live stream.

Between steps people can add their own points (they run before the agent's next
suggestion is asked for) and veto a suggestion that has not started. Pausing keeps
the pending suggestions; stopping ends the campaign (a step already running finishes).
A restarted service picks its running campaigns up again: the agent is rebuilt from
the stored observations; a step an ``sdl worker`` is still running is left alone.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from sqlalchemy import select

from sdl.campaign import CampaignRunner, best_trace, best_value
from sdl.models import Observation, Provenance, Suggestion
from sdl.service.db import ItemRow, ProposalRow, ServiceCampaignRow, audit
from sdl.service.dispatch import is_disconnect
from sdl.service.errors import Conflict, NotFound
from sdl.store import RunRow, Store, SuggestionRow, utcnow

log = logging.getLogger(__name__)


def is_approved(row: Any) -> bool:
    """A suggestion a member approved, or a point a person added (their adding it is the approval)."""
    prov = row.provenance or {}
    return bool(prov.get("approved")) or prov.get("agent") == "user"


class _NoRunEngine:
    """The planner never runs plans (workers do); a runner built for it needs no RunEngine."""

    def subscribe(self, *_a: Any) -> int:
        return 0

    def unsubscribe(self, *_a: Any) -> None:
        pass


class CampaignSession:
    def __init__(self, svc: Any, campaign_id: str, worker: Any):
        self.svc = svc
        self.campaign_id = campaign_id
        self.worker = worker
        # the runner, driven one step at a time (build_agent, _stop_reason, _next_pending); workers run the plans
        self.runner = CampaignRunner(svc.store, campaign_id, instrument=worker.instrument,
                                     run_engine=_NoRunEngine())
        self.agent: Any = None
        self.lock = threading.RLock()
        #: suggestions whose observation the agent was told (and the stream was shown)
        self.told: set[str | None] = {o.suggestion_id for o in svc.store.observations(campaign_id)}

    def ensure_agent(self) -> Any:
        with self.lock:
            if self.agent is None:
                obs = [o for o in self.svc.store.observations(self.campaign_id) if o.suggestion_id in self.told]
                self.agent = self.runner.build_agent(obs)
            return self.agent


class CampaignManager:
    def __init__(self, svc: Any):
        self.svc = svc
        self.store: Store = svc.store
        self.sessions: dict[str, CampaignSession] = {}
        self._lock = threading.RLock()
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._main, name="sdl-campaign-planner", daemon=True)

    # --------------------------------------------------------------- lifecycle
    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.wake()
        if self._thread.is_alive():
            self._thread.join(10)

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def session(self, campaign_id: str, create: bool = False) -> CampaignSession | None:
        with self._lock:
            sess = self.sessions.get(campaign_id)
            if sess is None and create:
                with self.svc.db.read() as s:
                    row = s.get(ServiceCampaignRow, campaign_id)
                if row is None:
                    raise NotFound(f"campaign {campaign_id!r} not found")
                worker = self.svc.workers.get(row.instrument)
                if worker is None:
                    raise Conflict(f"instrument {row.instrument!r} is not served here")
                interrupted = self._recover_orphans(campaign_id)
                if interrupted:
                    log.warning("campaign %s: %d interrupted run(s) kept, points requeued", campaign_id,
                                len(interrupted))
                sess = self.sessions[campaign_id] = CampaignSession(self.svc, campaign_id, worker)
            return sess

    def _recover_orphans(self, campaign_id: str) -> list[str]:
        """Runs and suggestions left 'running' with no running item behind them (a process
        died between steps): the runs are closed as interrupted, their points are pending
        again. A step some worker still runs under its lease is not touched."""
        with self.svc.db.read() as s:
            live = set(s.scalars(select(ItemRow.suggestion_id).where(ItemRow.campaign_id == campaign_id,
                                                                     ItemRow.status == "running")))
        with self.store.session() as s:
            runs = [r for r in s.scalars(select(RunRow).where(RunRow.campaign_id == campaign_id,
                                                              RunRow.status == "running"))
                    if r.suggestion_id not in live]
            for run in runs:
                run.status, run.finished_at = "interrupted", utcnow()
                run.reason = run.reason or "process ended before the run finished"
            for sug in s.scalars(select(SuggestionRow).where(SuggestionRow.campaign_id == campaign_id,
                                                             SuggestionRow.status == "running")):
                if sug.id not in live:
                    sug.status = "pending"
            return [r.uid for r in runs]

    def drop(self, campaign_id: str) -> None:
        with self._lock:
            self.sessions.pop(campaign_id, None)

    # ------------------------------------------------------------------- loop
    def _main(self) -> None:
        last_reap = time.monotonic()
        while not self._stop.is_set():
            try:
                self.tick()
                if time.monotonic() - last_reap > min(10.0, self.svc.settings.lease_timeout_s / 2):
                    last_reap = time.monotonic()
                    self.svc.recover(expired_only=True)
            except Exception:  # noqa: BLE001 - never let the planner die
                log.exception("campaign planner")
            with self._cond:
                self._cond.wait(0.5)

    def tick(self) -> None:
        with self.svc.db.read() as s:
            running = list(s.scalars(select(ServiceCampaignRow).where(ServiceCampaignRow.state == "running")))
            busy = set(s.scalars(select(ItemRow.campaign_id).where(
                ItemRow.campaign_id.is_not(None), ItemRow.status.in_(("queued", "running")))))
        for row in running:
            if self._stop.is_set():
                return
            if row.campaign_id in busy or row.instrument not in self.svc.workers:
                continue
            try:
                self._advance(row)
            except Exception as exc:  # noqa: BLE001 - the campaign fails, the service goes on
                if is_disconnect(exc):  # the database restarts: not the campaign's fault
                    raise
                log.exception("campaign %s", row.campaign_id)
                self.svc.set_campaign_state(row.campaign_id, "failed", f"{type(exc).__name__}: {exc}")

    def _advance(self, row: ServiceCampaignRow) -> None:
        sess = self.session(row.campaign_id, create=True)
        runner = sess.runner
        if self._sync(sess, row):
            return  # the campaign stopped on a failure
        # a target is judged by the agent's model where it has one (values of different noise)
        with sess.lock:
            reason = runner._stop_reason(sess.ensure_agent() if runner.spec.stopping.target is not None else None)
        if reason:
            self.svc.set_campaign_state(row.campaign_id, "completed", reason)
            return
        agent = sess.ensure_agent()
        with sess.lock:
            n_before = len(self.store.suggestions(row.campaign_id))
            sug = runner._next_pending(agent)
            new = self.store.suggestions(row.campaign_id)[n_before:]
        for s in new:
            self.svc.bus.publish({"type": "campaign", "event": "suggestion", "campaign_id": row.campaign_id,
                                  "suggestion_id": s.id, "seq": s.seq, "params": s.params,
                                  "provenance": s.provenance}, proposal_id=row.proposal_id)
        if runner.spec.approve_before_run:  # run only what a member approved (points people added count)
            ready = [r for r in self.store.suggestions(row.campaign_id, status="pending") if is_approved(r)]
            if not ready:
                return  # waits; approve() or veto() wakes the planner
            sug = ready[0]
        with self.svc.db.session() as s:
            cur = s.get(ServiceCampaignRow, row.campaign_id)
            if cur is None or cur.state != "running":
                return  # paused or stopped while the agent was thinking
            # a step is an experiment of the proposal: the same allocation check as a submission
            spent = self.svc.allocation_spent(s, s.get(ProposalRow, row.proposal_id))
            item = None if spent else self.svc.new_item(
                s, kind="campaign", instrument=row.instrument,
                plan=runner.spec.plan or runner.instrument.default_plan,
                params={**sug.params, **runner.spec.context()}, proposal_id=row.proposal_id,
                user_id=row.owner_id, priority=row.priority, campaign_id=row.campaign_id, suggestion_id=sug.id,
                note=f"campaign {row.campaign_id[:8]} step {sug.seq}",
            )
        if item is None:
            self.svc.set_campaign_state(row.campaign_id, "stopped", str(spent))
            return
        self.svc.item_queued(item)

    # -------------------------------------------------------- observations
    def _sync(self, sess: CampaignSession, crow: ServiceCampaignRow) -> bool:
        """Tell the agent the observations it has not been told (whichever process measured
        them) and publish them; True when one failed and the policy stops the campaign."""
        new = [o for o in self.store.observations(crow.campaign_id) if o.suggestion_id not in sess.told]
        if not new:
            return False
        agent = sess.ensure_agent()
        with sess.lock:
            agent.tell(new)
            sess.told.update(o.suggestion_id for o in new)
        for o in new:
            self._publish_observation(crow, sess.runner, o)
        if any(not o.ok for o in new) and sess.runner.spec.on_failure == "stop":
            self.svc.set_campaign_state(crow.campaign_id, "failed", "an experiment failed; policy: stop")
            return True
        return False

    def _publish_observation(self, crow: ServiceCampaignRow, runner: CampaignRunner, o: Observation | None) -> None:
        obs = self.store.observations(crow.campaign_id)
        if o is not None:  # the stream shows the campaign as it was when this one came in
            upto = [x.suggestion_id for x in obs].index(o.suggestion_id) + 1 if o.suggestion_id in \
                {x.suggestion_id for x in obs} else len(obs)
            obs = obs[:upto]
        objective = runner.objectives[0]
        self.svc.bus.publish({
            "type": "campaign", "event": "observation", "campaign_id": crow.campaign_id,
            "instrument": crow.instrument,
            "n": len(obs), "budget": runner.spec.budget, "objective": objective.name,
            "observation": None if o is None else {"params": o.params, "values": o.values, "ok": o.ok,
                                                   "run_uid": o.run_uid, "suggestion_id": o.suggestion_id},
            "best": best_value(obs, objective), "best_trace_last": (best_trace(obs, objective) or [None])[-1],
        }, proposal_id=crow.proposal_id)

    # ---------------------------------------------------------- people's input
    def add_point(self, actor: Any, campaign_id: str, params: dict, reason: str) -> Suggestion:
        with self.svc.db.read() as s:
            crow = s.get(ServiceCampaignRow, campaign_id)
            if crow is None:
                raise NotFound(f"campaign {campaign_id!r} not found")
            if crow.state in ("stopped", "completed", "failed"):
                raise Conflict(f"campaign is {crow.state}; points can be added until it ends")
        sess = self.session(campaign_id, create=True)
        point = sess.runner.space.validate_point(params)
        point = sess.worker.instrument.space.validate_point(point)
        sug = Suggestion(params=point, provenance=Provenance(agent="user", model=None, reason=reason or
                                                             f"added by {actor.name}", user=actor.name))
        with sess.lock:
            self.store.add_suggestions(campaign_id, [sug])
            if sess.agent is not None:
                sess.agent.add_pending([point])
        with self.svc.db.session() as s:
            audit(s, actor, "campaign.add_point", "campaign", campaign_id, crow.proposal_id,
                  suggestion_id=sug.id, params=point, reason=reason)
        self.svc.bus.publish({"type": "campaign", "event": "suggestion", "campaign_id": campaign_id,
                              "suggestion_id": sug.id, "params": point,
                              "provenance": sug.provenance.model_dump()}, proposal_id=crow.proposal_id)
        self.wake()
        return sug

    def approve(self, actor: Any, campaign_id: str, suggestion_id: str, comment: str) -> dict:
        """A member lets a pending suggestion run (campaigns with ``approve_before_run``)."""
        with self.store.session() as s:
            row = s.get(SuggestionRow, suggestion_id)
            if row is None or row.campaign_id != campaign_id:
                raise NotFound(f"suggestion {suggestion_id!r} not found in campaign {campaign_id!r}")
            if row.status != "pending":
                raise Conflict(f"suggestion is {row.status}; only a pending one can be approved")
            prov = dict(row.provenance or {})
            prov["approved"] = {"by": actor.name, "comment": comment, "at": utcnow().isoformat()}
            row.provenance = prov
        with self.svc.db.session() as s:
            crow = s.get(ServiceCampaignRow, campaign_id)
            audit(s, actor, "campaign.approve", "suggestion", suggestion_id, crow.proposal_id if crow else None,
                  campaign_id=campaign_id, comment=comment)
        if crow is not None:
            self.svc.bus.publish({"type": "campaign", "event": "approval", "campaign_id": campaign_id,
                                  "suggestion_id": suggestion_id, "by": actor.name, "comment": comment},
                                 proposal_id=crow.proposal_id)
        self.wake()
        return {"suggestion_id": suggestion_id, "status": "pending", "approved": prov["approved"]}

    def veto(self, actor: Any, campaign_id: str, suggestion_id: str, reason: str) -> dict:
        with self.store.session() as s:
            row = s.get(SuggestionRow, suggestion_id)
            if row is None or row.campaign_id != campaign_id:
                raise NotFound(f"suggestion {suggestion_id!r} not found in campaign {campaign_id!r}")
            if row.status != "pending":
                raise Conflict(f"suggestion is {row.status}; only a pending one (not started) can be vetoed"
                               + ("; abort the running experiment instead" if row.status == "running" else ""))
            row.status = "vetoed"
            prov = dict(row.provenance or {})
            prov["vetoed"] = {"by": actor.name, "reason": reason, "at": utcnow().isoformat()}
            row.provenance = prov
        with self.svc.db.session() as s:
            crow = s.get(ServiceCampaignRow, campaign_id)
            items = list(s.scalars(select(ItemRow).where(ItemRow.suggestion_id == suggestion_id,
                                                         ItemRow.status == "queued")))
            for it in items:
                it.status, it.error, it.finished_at = "cancelled", f"suggestion vetoed by {actor.name}", utcnow()
            audit(s, actor, "campaign.veto", "suggestion", suggestion_id, crow.proposal_id if crow else None,
                  campaign_id=campaign_id, reason=reason)
        for it in items:
            self.svc.publish_item(it)
        if crow is not None:
            self.svc.bus.publish({"type": "campaign", "event": "veto", "campaign_id": campaign_id,
                                  "suggestion_id": suggestion_id, "by": actor.name, "reason": reason},
                                 proposal_id=crow.proposal_id)
        self.wake()
        return {"suggestion_id": suggestion_id, "status": "vetoed"}

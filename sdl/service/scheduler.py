"""The per-instrument queue: fair share between proposals, priority within one.

When an instrument's worker is free it asks :meth:`Scheduler.next_item`. The choice:

1. Only approved proposals within their allocation (experiments or hours) compete.
2. Dedicated vs shared use: each instrument has a ``dedicated_fraction``. Proposals
   flagged *dedicated* (in-house, staff) form one pool, all others the shared pool.
   When both pools have work, the dedicated pool is served while its share of the
   instrument's charged time is at or below the fraction, the shared pool otherwise.
   When only one pool has work it gets the instrument (work-conserving). With a
   fraction of 0 both pools compete as one.
3. Fair share inside a pool, least-used-first: every proposal has a charge on the
   instrument (1 per experiment started, plus 1 per instrument-minute used, counted
   in whole seconds). The
   proposal with the smallest charge goes next; ties go to the one served longest
   ago, then to the one waiting longest. A proposal that was idle is lifted to the
   smallest charge of those that kept the instrument busy, so it cannot bank credit
   and then starve the others (start-time fair queueing).
4. Inside the chosen proposal: highest ``priority`` first, then first come first served.

A claim is an atomic ``UPDATE ... WHERE status = 'queued'`` so two workers (or two
processes on one database) never run the same item.
"""

from __future__ import annotations

import copy
import math
import threading
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select, update

from sdl.service.db import ItemRow, ProposalRow, UsageRow
from sdl.store import utcnow

#: Charge per experiment started, and per instrument-minute used.
CHARGE_PER_EXPERIMENT = 1.0
CHARGE_PER_MINUTE = 1.0
#: Statuses that count against an experiments allocation.
COUNTED = ("queued", "running", "done", "failed", "aborted")


@dataclass
class FairState:
    charge: dict[str, float] = field(default_factory=dict)
    last_served: dict[str, float] = field(default_factory=dict)
    prev_active: set[str] = field(default_factory=set)
    pool_charge: dict[str, float] = field(default_factory=lambda: {"dedicated": 0.0, "shared": 0.0})
    served: int = 0


@dataclass
class Candidate:
    proposal_id: str
    dedicated: bool
    waiting_since: Any


def choose(state: FairState, cands: dict[str, Candidate], dedicated_fraction: float, *, commit: bool = True) -> str:
    """The proposal to serve next (see the module docstring). Updates ``state`` if ``commit``."""
    active = set(cands)
    old = active & state.prev_active
    if old:
        floor = min(state.charge.get(p, 0.0) for p in old)
        for p in active - old:
            if state.charge.get(p, 0.0) < floor:
                state.charge[p] = floor
    if commit:
        state.prev_active = active
    pool = active
    ded = {p for p in active if cands[p].dedicated}
    shared = active - ded
    if ded and shared and dedicated_fraction > 0:
        total = state.pool_charge["dedicated"] + state.pool_charge["shared"]
        pool = ded if state.pool_charge["dedicated"] <= dedicated_fraction * total else shared
    return min(pool, key=lambda p: (state.charge.get(p, 0.0), state.last_served.get(p, 0.0),
                                    cands[p].waiting_since, p))


class Scheduler:
    def __init__(self, svc: Any):
        self.svc = svc
        self.db = svc.db
        self.states: dict[str, FairState] = {cfg.name: FairState() for cfg in svc.settings.instruments}
        self.dedicated_fraction: dict[str, float] = {
            cfg.name: cfg.dedicated_fraction for cfg in svc.settings.instruments
        }
        self._lock = threading.RLock()
        self._cond = threading.Condition()
        self._seq = 0.0

    # ------------------------------------------------------------------ waking
    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def wait(self, timeout: float) -> None:
        with self._cond:
            self._cond.wait(timeout)

    # ------------------------------------------------------------- candidates
    def usage(self, s, proposal_ids: list[str]) -> dict[str, tuple[int, float]]:
        """(experiments counted, hours used) per proposal."""
        if not proposal_ids:
            return {}
        counts = dict(s.execute(
            select(ItemRow.proposal_id, func.count()).where(ItemRow.proposal_id.in_(proposal_ids),
                                                             ItemRow.status.in_(COUNTED))
            .group_by(ItemRow.proposal_id)
        ).all())
        seconds = dict(s.execute(
            select(UsageRow.proposal_id, func.sum(UsageRow.seconds)).where(UsageRow.proposal_id.in_(proposal_ids))
            .group_by(UsageRow.proposal_id)
        ).all())
        return {p: (int(counts.get(p, 0)), float(seconds.get(p) or 0.0) / 3600.0) for p in proposal_ids}

    def _candidates(self, s, instrument: str) -> dict[str, Candidate]:
        rows = s.execute(
            select(ItemRow.proposal_id, func.min(ItemRow.created_at))
            .where(ItemRow.instrument == instrument, ItemRow.status == "queued")
            .group_by(ItemRow.proposal_id)
        ).all()
        if not rows:
            return {}
        waiting = dict(rows)
        props = {p.id: p for p in s.scalars(select(ProposalRow).where(ProposalRow.id.in_(list(waiting))))}
        # queued items were counted against an experiments allocation at submission;
        # only hours can run out while an item waits
        used = self.usage(s, [p for p, prop in props.items() if prop.allocation_hours is not None])
        out: dict[str, Candidate] = {}
        for pid, prop in props.items():
            if prop.status != "approved":
                continue
            if prop.allocation_hours is not None and used[pid][1] >= prop.allocation_hours:
                continue
            out[pid] = Candidate(pid, bool(prop.dedicated), waiting[pid])
        return out

    def _head(self, s, instrument: str, proposal_id: str) -> ItemRow | None:
        return s.scalar(
            select(ItemRow).where(ItemRow.instrument == instrument, ItemRow.status == "queued",
                                  ItemRow.proposal_id == proposal_id)
            .order_by(ItemRow.priority.desc(), ItemRow.created_at, ItemRow.id).limit(1)
        )

    # -------------------------------------------------------------- dispatch
    def next_item(self, instrument: str, worker_id: str, may_run: Any = None) -> ItemRow | None:
        """Claim the next item for ``instrument`` (fair share), or None if nothing may run.

        ``may_run()`` is asked under the scheduler's lock, which pausing an instrument
        also takes: once a pause has returned, nothing new starts there.
        """
        with self._lock:
            if may_run is not None and not may_run():
                return None
            with self.db.read() as s:
                cands = self._candidates(s, instrument)
            state = self.states.setdefault(instrument, FairState())
            while cands:
                pid = choose(state, cands, self.dedicated_fraction.get(instrument, 0.0))
                with self.db.session() as s:
                    head = self._head(s, instrument, pid)
                    if head is not None:
                        now = utcnow()
                        claimed = s.execute(
                            update(ItemRow).where(ItemRow.id == head.id, ItemRow.status == "queued")
                            .values(status="running", worker=worker_id, started_at=now, heartbeat_at=now,
                                    attempts=ItemRow.attempts + 1)
                        ).rowcount
                        if claimed == 1:  # the session synchronised ``head`` with the update
                            self._charge(state, pid, cands[pid].dedicated, CHARGE_PER_EXPERIMENT)
                            self._seq += 1
                            state.last_served[pid] = self._seq
                            state.served += 1
                            return head
                cands.pop(pid)
        return None

    @staticmethod
    def _charge(state: FairState, pid: str, dedicated: bool, amount: float) -> None:
        state.charge[pid] = state.charge.get(pid, 0.0) + amount
        state.pool_charge["dedicated" if dedicated else "shared"] += amount

    def charge_time(self, instrument: str, proposal_id: str, dedicated: bool, seconds: float) -> None:
        with self._lock:
            state = self.states.setdefault(instrument, FairState())
            # whole seconds: sub-second runs (instant simulation) do not break ties at random
            self._charge(state, proposal_id, dedicated, CHARGE_PER_MINUTE * math.floor(seconds) / 60.0)

    def set_dedicated_fraction(self, instrument: str, fraction: float) -> None:
        with self._lock:
            self.dedicated_fraction[instrument] = fraction

    # ------------------------------------------------------------- prediction
    def predicted_order(self, instrument: str, limit: int = 200) -> list[tuple[ItemRow, bool]]:
        """Queued items in the order they would run if nothing else arrived, each with
        ``blocked`` (its proposal may not run now: not approved, or its hours are spent)."""
        with self._lock:
            state = copy.deepcopy(self.states.get(instrument, FairState()))
            frac = self.dedicated_fraction.get(instrument, 0.0)
        with self.db.read() as s:
            cands = self._candidates(s, instrument)
            items = list(s.scalars(
                select(ItemRow).where(ItemRow.instrument == instrument, ItemRow.status == "queued",
                                      ItemRow.proposal_id.in_(list(cands)))
                .order_by(ItemRow.priority.desc(), ItemRow.created_at, ItemRow.id)
            ))
            blocked = list(s.scalars(
                select(ItemRow).where(ItemRow.instrument == instrument, ItemRow.status == "queued",
                                      ItemRow.proposal_id.not_in(list(cands)))
                .order_by(ItemRow.created_at).limit(limit)
            ))
        per: dict[str, list[ItemRow]] = {}
        for it in items:
            per.setdefault(it.proposal_id, []).append(it)
        out: list[tuple[ItemRow, bool]] = []
        seq = max(state.last_served.values(), default=0.0)
        while per and len(out) < limit:
            active = {p: cands[p] for p in per}
            pid = choose(state, active, frac)
            it = per[pid].pop(0)
            out.append((it, False))
            self._charge(state, pid, cands[pid].dedicated, CHARGE_PER_EXPERIMENT)
            seq += 1
            state.last_served[pid] = seq
            if not per[pid]:
                del per[pid]
        for it in blocked:
            if len(out) >= limit:
                break
            out.append((it, True))
        return out

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

The state of the choice (charges, who was served when) is not one process's memory: it
is stored in the instrument's row of ``svc_instruments`` and every claim, by any worker
thread or ``sdl worker`` process on any host, reads and writes it under that row's lock
(see :mod:`sdl.service.dispatch`). N workers therefore obey the same fair queue, and a
restarted service carries on with the charges it had. Workflow tasks on the instrument
are in the same queue, chosen with the same state (:mod:`sdl.workflows.fairqueue`).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select

from sdl.service.db import InstrumentStateRow, ItemRow, ProposalRow, UsageRow

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
    seq: float = 0.0

    def to_json(self) -> dict:
        return {"charge": dict(self.charge), "last_served": dict(self.last_served),
                "prev_active": sorted(self.prev_active), "pool_charge": dict(self.pool_charge),
                "served": self.served, "seq": self.seq}

    @classmethod
    def from_json(cls, d: dict | None) -> "FairState":
        d = d or {}
        return cls(charge=dict(d.get("charge", {})), last_served=dict(d.get("last_served", {})),
                   prev_active=set(d.get("prev_active", [])),
                   pool_charge={"dedicated": 0.0, "shared": 0.0, **d.get("pool_charge", {})},
                   served=int(d.get("served", 0)), seq=float(d.get("seq", 0.0)))


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


def charge(state: FairState, pid: str, dedicated: bool, amount: float) -> None:
    state.charge[pid] = state.charge.get(pid, 0.0) + amount
    state.pool_charge["dedicated" if dedicated else "shared"] += amount


def record_claim(st, state: FairState, pid: str, dedicated: bool) -> None:
    """One unit of ``pid``'s work (an experiment or a workflow task) claimed on the instrument
    whose locked row is ``st``: charged, last in the round-robin order, counted, stored."""
    charge(state, pid, dedicated, CHARGE_PER_EXPERIMENT)
    state.seq += 1
    state.last_served[pid] = state.seq
    state.served += 1
    st.fair = state.to_json()
    st.claims = (st.claims or 0) + 1


def usage(s, proposal_ids: list[str]) -> dict[str, tuple[int, float]]:
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
    from sdl.workflows.counting import counted_tasks  # workflow tasks count like experiments

    for p, n in counted_tasks(s, proposal_ids).items():
        counts[p] = counts.get(p, 0) + n
    return {p: (int(counts.get(p, 0)), float(seconds.get(p) or 0.0) / 3600.0) for p in proposal_ids}


def candidates(s, instrument: str) -> dict[str, Candidate]:
    """Proposals with queued work on ``instrument`` that may run now."""
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
    used = usage(s, [p for p, prop in props.items() if prop.allocation_hours is not None])
    out: dict[str, Candidate] = {}
    for pid, prop in props.items():
        if prop.status != "approved":
            continue
        if prop.allocation_hours is not None and used[pid][1] >= prop.allocation_hours:
            continue
        out[pid] = Candidate(pid, bool(prop.dedicated), waiting[pid])
    return out


class Scheduler:
    """The service's view of the queues: claims go to :class:`sdl.service.dispatch.Dispatcher`
    (shared state in the database); this adds in-process wake-ups and the predicted order."""

    def __init__(self, svc: Any):
        self.svc = svc
        self.db = svc.db
        self.dispatcher = svc.dispatcher
        for cfg in svc.settings.instruments:
            self.dispatcher.ensure_instrument(cfg.name, cfg.dedicated_fraction)
        self._lock = threading.RLock()
        self._cond = threading.Condition()

    # ------------------------------------------------------------------ waking
    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def wait(self, timeout: float) -> None:
        with self._cond:
            self._cond.wait(timeout)

    # ------------------------------------------------------------- candidates
    @staticmethod
    def usage(s, proposal_ids: list[str]) -> dict[str, tuple[int, float]]:
        return usage(s, proposal_ids)

    @property
    def states(self) -> dict[str, FairState]:
        with self.db.read() as s:
            return {r.instrument: FairState.from_json(r.fair) for r in s.scalars(select(InstrumentStateRow))}

    @property
    def dedicated_fraction(self) -> dict[str, float]:
        with self.db.read() as s:
            return {r.instrument: float(r.dedicated_fraction or 0.0) for r in s.scalars(select(InstrumentStateRow))}

    # -------------------------------------------------------------- dispatch
    def next_item(self, instrument: str, worker_id: str, may_run: Any = None):
        """Claim the next item for ``instrument`` (fair share): a :class:`Lease`, or None."""
        with self._lock:
            return self.dispatcher.claim(instrument, worker_id, may_run)

    def set_dedicated_fraction(self, instrument: str, fraction: float) -> None:
        self.dispatcher.set_dedicated_fraction(instrument, fraction)

    # ------------------------------------------------------------- prediction
    def predicted_order(self, instrument: str, limit: int = 200) -> list[tuple[ItemRow, bool]]:
        """Queued items in the order they would run if nothing else arrived, each with
        ``blocked`` (its proposal may not run now: not approved, or its hours are spent)."""
        with self.db.read() as s:
            row = s.get(InstrumentStateRow, instrument)
            state = FairState.from_json(None if row is None else row.fair)
            frac = 0.0 if row is None else float(row.dedicated_fraction or 0.0)
            cands = candidates(s, instrument)
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
        seq = state.seq
        while per and len(out) < limit:
            active = {p: cands[p] for p in per}
            pid = choose(state, active, frac)
            it = per[pid].pop(0)
            out.append((it, False))
            charge(state, pid, cands[pid].dedicated, CHARGE_PER_EXPERIMENT)
            seq += 1
            state.last_served[pid] = seq
            if not per[pid]:
                del per[pid]
        for it in blocked:
            if len(out) >= limit:
                break
            out.append((it, True))
        return out

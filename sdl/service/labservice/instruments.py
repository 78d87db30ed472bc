"""Instruments: description, plans, pools, control, the dedicated share and the queue
(router: :mod:`sdl.service.routers.instruments`).

A part of :class:`sdl.service.service.LabService` (a mixin): its methods use the
service's state (``db``, ``store``, ``workers``, ``scheduler``...) set up there."""

from __future__ import annotations

from sqlalchemy import func, select

from sdl.service.auth import Principal
from sdl.service.authz import can, require
from sdl.service.db import ItemRow, audit
from sdl.service.errors import NotFound


class InstrumentsMixin:
    def worker(self, name: str):
        w = self.workers.get(name)
        if w is None:
            raise NotFound(f"unknown instrument {name!r}; served here: {sorted(self.workers)}")
        return w

    def instrument_json(self, name: str, base_url: str = "/api", p: Principal | None = None) -> dict:
        w = self.worker(name)
        inst = w.instrument
        status = w.describe()
        pid = status.get("current_proposal")
        if p is not None and pid is not None and not (can(p, "instruments.current") or self.view(p).can_read(pid)):
            status["current_proposal"] = None  # who runs where is the proposal's business
        with self.db.read() as s:
            counts = dict(s.execute(select(ItemRow.status, func.count()).where(ItemRow.instrument == name,
                                                                               ItemRow.status.in_(("queued",
                                                                                                   "running")))
                                    .group_by(ItemRow.status)).all())
        return {
            "name": name,
            "description": inst.description,
            "status": status,
            "queue_length": int(counts.get("queued", 0)),
            "dedicated_fraction": self.scheduler.dedicated_fraction.get(name, 0.0),
            "objectives": [o.model_dump() for o in inst.objectives],
            "space": inst.space.model_dump(exclude={"pool"}),
            "pool_size": None if inst.space.pool is None else len(inst.space.pool),
            "plans": {pname: inst.plan_schema(pname, base_url) for pname in inst.plan_names},
            "source": getattr(inst, "source", ""),
        }

    def instrument_pool(self, name: str) -> list[dict]:
        inst = self.worker(name).instrument
        if inst.space.pool is None:
            raise NotFound(f"instrument {name!r} has no candidate pool: any point within the limits can be made")
        return list(inst.space.pool)

    def plan_schema(self, name: str, plan: str, base_url: str = "/api") -> dict:
        w = self.worker(name)
        if plan not in w.instrument.plan_names:
            raise NotFound(f"unknown plan {plan!r}; {name} accepts {w.instrument.plan_names}")
        return w.instrument.plan_schema(plan, base_url)

    def control_instrument(self, p: Principal, name: str, action: str, reason: str = "",
                           immediate: bool = True) -> dict:
        require(p, "instruments.control", "only beamline scientists and admins pause, resume or abort instruments")
        w = self.worker(name)
        aborted = None
        if action == "pause":
            self.dispatcher.set_paused(name, True, immediate)  # no claim in flight anywhere once it returns
            w.pause(immediate)
        elif action == "resume":
            self.dispatcher.set_paused(name, False)
            w.resume()
        elif action == "abort":
            aborted = w.abort_current(reason or f"aborted by {p.name}")
        with self.db.session() as s:
            audit(s, p, f"instrument.{action}", "instrument", name, None, reason=reason, immediate=immediate,
                  item_id=aborted)
        return {"instrument": name, "status": w.describe(), "aborted_item": aborted}

    def set_share(self, p: Principal, name: str, fraction: float) -> dict:
        require(p, "instruments.share", "only admins set the dedicated fraction")
        self.worker(name)
        old = self.scheduler.dedicated_fraction.get(name, 0.0)
        self.scheduler.set_dedicated_fraction(name, fraction)  # stored: every worker process uses it
        with self.db.session() as s:
            audit(s, p, "instrument.share", "instrument", name, None, dedicated_fraction=[old, fraction])
        return {"instrument": name, "dedicated_fraction": fraction}

    def queue(self, p: Principal, name: str, limit: int = 200) -> list[dict]:
        self.worker(name)
        view = self.view(p)
        out = []
        with self.db.read() as s:
            running = list(s.scalars(select(ItemRow).where(ItemRow.instrument == name, ItemRow.status == "running")))
        for it in running:
            out.append(self.item_json(it, view, p, position=0))
        for i, (it, blocked) in enumerate(self.scheduler.predicted_order(name, limit)):
            d = self.item_json(it, view, p, position=i + 1)
            d["blocked"] = blocked
            out.append(d)
        return out

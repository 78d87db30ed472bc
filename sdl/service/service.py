"""The service: accounts, proposals, the queue, campaigns, data and metering.

:class:`LabService` is a facade made of one part per resource (:mod:`sdl.service.labservice`,
named as the routers in :mod:`sdl.service.routers`); it holds the store, the service
tables, the scheduler, one worker per instrument, the campaign planner and the
live-event bus. The HTTP layer
(:mod:`sdl.service.api`) only translates between HTTP and these methods; every change
is audited in the same transaction as the change itself.
"""

from __future__ import annotations

import datetime as dt
import threading
from typing import Any

from sqlalchemy import func, select

from sdl.models import new_id
from sdl.service.access import MembershipCache
from sdl.service.auth import Authenticator, RateLimiter
from sdl.service.db import ItemRow, LockedStore, ServiceDB, UserRow, audit, iso
from sdl.service.events import EventBus
from sdl.service.labservice import (
    AccountsMixin,
    CampaignsMixin,
    DataMixin,
    ExperimentsMixin,
    InstrumentsMixin,
    ProposalsMixin,
    UsageMixin,
)
from sdl.service.labservice.common import SYSTEM, _require, csv_cell, log
from sdl.service.scheduler import Scheduler
from sdl.service.settings import ServiceSettings
from sdl.store import Store, utcnow

__all__ = ["SYSTEM", "ExternalInstrument", "LabService", "_require", "csv_cell"]


class LabService(AccountsMixin, ProposalsMixin, InstrumentsMixin, ExperimentsMixin, CampaignsMixin, DataMixin,
                 UsageMixin):
    """The facade the routers call: the state (store, service tables, scheduler, workers,
    campaign planner, event bus), the lifecycle and the workers' callbacks here; the
    methods per resource in :mod:`sdl.service.labservice`."""

    def __init__(self, settings: ServiceSettings):
        from sdl.service.campaigns import CampaignManager
        from sdl.service.dispatch import Dispatcher
        from sdl.service.relay import EventRelay
        from sdl.service.workers import InstrumentWorker

        self.settings = settings
        self.db = ServiceDB(settings.store_url)
        self.store: Store = LockedStore(settings.store_url, self.db.lock)
        self.auth = Authenticator(self.db)
        self.members = MembershipCache(self.db)
        self.limiter = RateLimiter(settings.rate_limit_per_minute, settings.rate_limit_burst)
        self.address_limiter = RateLimiter(settings.rate_limit_per_address_per_minute,
                                           settings.rate_limit_address_burst)
        self.failure_limiter = RateLimiter(settings.auth_failures_per_minute, settings.auth_failures_burst)
        self.origin = new_id()[:12]
        self.dispatcher = Dispatcher(self.db, lease_timeout_s=settings.lease_timeout_s,
                                     max_attempts=settings.max_attempts, origin=self.origin)
        self.bus = EventBus(settings.ws_queue_size)
        self.relay = EventRelay(self)
        self.bus.forward = self.relay.forward if self.dispatcher.pg else None
        self.scheduler = Scheduler(self)
        self.poll_s = settings.event_poll_s
        self.workers: dict[str, Any] = {
            cfg.name: (ExternalInstrument(self, cfg) if settings.is_external(cfg) else InstrumentWorker(self, cfg))
            for cfg in settings.instruments
        }
        self.campaigns = CampaignManager(self)
        self.started = False
        self.relay_started = False
        self.data_views: Any = None  # Tiled feed (sdl.data_views), when the settings ask for it
        self._lock = threading.RLock()

    @property
    def embedded(self) -> list[str]:
        """Instruments whose worker is a thread of this process."""
        return [n for n, w in self.workers.items() if not getattr(w, "external", False)]

    @property
    def external(self) -> list[str]:
        return [n for n, w in self.workers.items() if getattr(w, "external", False)]

    # ---------------------------------------------------------------- lifecycle
    def bootstrap(self) -> str | None:
        """On first start (no users yet): create the admin; return its token (shown once)."""
        with self.db.session() as s:
            if s.scalar(select(func.count()).select_from(UserRow)):
                return None
            admin = UserRow(id=new_id(), name=self.settings.admin_name, role="admin")
            s.add(admin)
            s.flush()
            given = self.settings.admin_token.get_secret_value() if self.settings.admin_token else None
            _, token = Authenticator.issue(s, admin.id, "bootstrap", None, token=given)
            audit(s, SYSTEM, "user.create", "user", admin.id, role="admin", name=admin.name, bootstrap=True)
        return token

    def start_relay(self) -> None:
        """Live events of other processes (sdl worker, other replicas) onto this bus."""
        if not self.relay_started:
            self.relay.start(self.external)
            self.relay_started = True

    def start(self) -> None:
        if self.started:
            return
        self.start_relay()
        self.recover()
        for w in self.workers.values():
            w.start()
        self.campaigns.start()
        from sdl.data_views.service_hook import start_data_views

        self.data_views = start_data_views(self)
        self.started = True

    def stop(self) -> None:
        if self.data_views is not None:
            self.data_views.stop()
            self.data_views = None
        if self.started:
            self.campaigns.stop()
            for w in self.workers.values():
                w.stop()
            self.started = False
        if self.relay_started:
            self.relay.stop()
            self.relay_started = False
        self.store.close()
        self.db.close()

    def recover(self, expired_only: bool = False) -> int:
        """Items a dead worker left running: experiments go back to the queue (up to
        ``max_attempts``), campaign steps are withdrawn (the campaign re-queues its point);
        their runs are closed as interrupted, partial documents kept.

        At start, every running item of an instrument whose worker is a thread of this
        process is such an item (this process is the only one that serves it); items of
        instruments served by ``sdl worker`` processes only when their lease expired. Later
        (``expired_only``, every few seconds) those whose lease expired, anywhere.
        """
        mine = [w.current.id for w in self.workers.values() if getattr(w, "current", None) is not None]
        rows = []
        if not expired_only and self.embedded:
            rows += self.dispatcher.sweep(instruments=self.embedded, all_running=True, exclude=mine,
                                          reason="the service stopped")
        rows += self.dispatcher.sweep(exclude=mine)
        for it in rows:
            self.bus.publish(self._item_event(it), it.proposal_id, relay=not self.dispatcher.pg)
        if rows:
            self.scheduler.wake()
            self.campaigns.wake()
        return len(rows)

    # ------------------------------------------------------- worker callbacks
    @staticmethod
    def _item_event(it: ItemRow) -> dict:
        from sdl.service.relay import item_event

        return item_event(it)

    def publish_item(self, it: ItemRow) -> None:
        self.bus.publish(self._item_event(it), proposal_id=it.proposal_id)

    def item_queued(self, it: ItemRow) -> None:
        self.publish_item(it)
        self.scheduler.wake()
        try:
            self.dispatcher.notify_queued(it.instrument)
        except Exception as exc:  # noqa: BLE001 - the workers poll as well
            log.info("wake %s: %s", it.instrument, exc)

    # the worker host interface (sdl.service.workers.InstrumentWorker)
    def publish(self, data: dict, proposal_id: str | None, *, relayed: bool) -> None:
        """An embedded worker's event: onto this bus; to the other replicas unless it was
        already sent in the transaction that wrote it."""
        self.bus.publish(data, proposal_id, relay=not relayed)

    def wait(self, timeout: float) -> None:
        self.scheduler.wait(timeout)

    def wake(self) -> None:
        self.scheduler.wake()

    def item_finished(self, it: ItemRow) -> None:
        self.scheduler.wake()
        if it.kind == "campaign":
            self.campaigns.wake()


class ExternalInstrument:
    """An instrument served by ``sdl worker`` processes. The service holds its description
    (space, objectives, plans: what requests are checked against) but no RunEngine; its
    state is what its workers last reported to the store, and control (pause, resume,
    abort) goes through the store, taken up by the worker at its next heartbeat."""

    external = True
    RE = None
    current = None

    def __init__(self, svc: LabService, cfg: Any):
        from sdl.service.workers import ServiceInstrument

        self.svc = svc
        self.name = cfg.name
        self.cfg = cfg
        ts = svc.settings.time_scale if cfg.time_scale is None else cfg.time_scale
        seed = svc.settings.seed if cfg.seed is None else cfg.seed
        self.time_scale = ts
        self.instrument = ServiceInstrument(cfg.build(seed=seed, time_scale=ts, n_slots=1), 1)

    def start(self) -> None:
        pass

    def stop(self, timeout: float = 0.0) -> None:
        pass

    def _live_workers(self) -> list:
        horizon = utcnow() - dt.timedelta(seconds=max(3 * self.svc.settings.heartbeat_s,
                                                      self.svc.settings.lease_timeout_s))
        from sdl.service.db import as_utc

        return [w for w in self.svc.dispatcher.workers(self.name)
                if as_utc(w.seen_at) >= horizon and w.state != "stopped"]

    @property
    def state(self) -> str:
        states = [w.state for w in self._live_workers()]
        for s in ("running", "paused", "idle", "starting"):
            if s in states:
                return s
        return "offline"

    @property
    def paused(self) -> bool:
        row = self.svc.dispatcher.instrument_state(self.name)
        return bool(row and row.paused)

    def describe(self) -> dict[str, Any]:
        live = self._live_workers()
        running = [w for w in live if w.item_id]
        cur = running[0].item_id if running else None
        prop = None
        if cur is not None:
            with self.svc.db.read() as s:
                prop = s.scalar(select(ItemRow.proposal_id).where(ItemRow.id == cur))
        return {"state": self.state, "paused": self.paused, "time_scale": self.time_scale,
                "current_item": cur, "current_proposal": prop, "worker": live[0].id if live else None,
                "external": True, "devices": live[0].devices if live else {},
                "workers": [{"id": w.id, "state": w.state, "item": w.item_id, "devices": w.devices,
                             "seen_at": iso(w.seen_at)} for w in live], "error": ""}

    def pause(self, immediate: bool = True) -> None:
        pass  # the stored flag (set by the service) is what the workers follow

    def resume(self) -> None:
        pass

    def abort(self, item_id: str | None, reason: str) -> bool:
        if item_id is None:
            return self.abort_current(reason) is not None
        return self.svc.dispatcher.request_abort(item_id, reason)

    def abort_current(self, reason: str) -> str | None:
        with self.svc.db.read() as s:
            ids = list(s.scalars(select(ItemRow.id).where(ItemRow.instrument == self.name,
                                                          ItemRow.status == "running")))
        for i in ids:
            self.svc.dispatcher.request_abort(i, reason)
        return ids[0] if ids else None

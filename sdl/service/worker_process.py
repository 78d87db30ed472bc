"""``sdl worker``: one instrument's RunEngine in its own process, against the shared store.

No HTTP: the process leases items from the store (:mod:`sdl.service.dispatch`), runs
them, writes their documents and results there, sends its live events through the
database (:mod:`sdl.service.relay`), and sweeps expired leases itself every few seconds
(so a facility whose service is down still recovers the items of a dead worker).
SIGTERM or Ctrl-C stops it cleanly: the running plan is aborted (its cleanup closes the
shutter), the run is kept as interrupted and the item goes back to the queue.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
from typing import Any

from sdl.models import new_id
from sdl.service.db import ItemRow, ServiceDB
from sdl.service.dispatch import Dispatcher, is_disconnect
from sdl.service.settings import InstrumentConfig, ServiceSettings
from sdl.store import Store

log = logging.getLogger(__name__)


class WorkerProcess:
    """The host of one external :class:`sdl.service.workers.InstrumentWorker`."""

    def __init__(self, settings: ServiceSettings, instrument: str, worker_id: str | None = None):
        from sdl.service.relay import QueueWaker
        from sdl.service.workers import InstrumentWorker

        self.settings = settings
        self.origin = new_id()[:12]
        self.store = Store(settings.store_url)  # the record's tables exist before the first run
        self.db = ServiceDB(settings.store_url)
        self.dispatcher = Dispatcher(self.db, lease_timeout_s=settings.lease_timeout_s,
                                     max_attempts=settings.max_attempts, origin=self.origin)
        cfg = settings.instrument(instrument) or InstrumentConfig(name=instrument)
        self.cfg = cfg
        self.dispatcher.ensure_instrument(cfg.name, cfg.dedicated_fraction)
        self.poll_s = settings.event_poll_s
        self.waker = QueueWaker(settings.store_url, cfg.name, self.dispatcher.pg)
        wid = worker_id or f"{socket.gethostname()}:{os.getpid()}:{cfg.name}"
        self.worker = InstrumentWorker(self, cfg, external=True, worker_id=wid)
        self.stop_event = threading.Event()
        self._sweeper = threading.Thread(target=self._sweep_main, name="sdl-sweeper", daemon=True)

    # ------------------------------------------------------------ host interface
    def publish(self, data: dict, proposal_id: str | None, *, relayed: bool) -> None:
        if relayed or not self.dispatcher.pg:
            return  # sent in its transaction already (PostgreSQL), or polled by the service (SQLite)
        from sdl.service.relay import encode

        try:
            with self.db.session() as s:
                self.dispatcher.notify(s, encode(data, proposal_id, self.origin))
        except Exception as exc:  # noqa: BLE001 - live events are best effort
            log.info("notify: %s", exc)

    def wait(self, timeout: float) -> None:
        self.waker.wait(timeout)

    def wake(self) -> None:
        self.waker.wake()

    def item_finished(self, item: ItemRow) -> None:
        pass

    # ---------------------------------------------------------------- running
    def _sweep_main(self) -> None:
        period = max(0.2, min(10.0, self.settings.lease_timeout_s / 3))
        while not self.stop_event.wait(period):
            cur = self.worker.current
            try:
                self.dispatcher.sweep(exclude=[cur.id] if cur is not None else [])
            except Exception as exc:  # noqa: BLE001 - next round
                if not is_disconnect(exc):
                    log.exception("sweep")

    def start(self) -> "WorkerProcess":
        self.worker.start()
        self._sweeper.start()
        return self

    def stop(self) -> None:
        self.stop_event.set()
        self.worker.stop(timeout=30)
        self.waker.stop()
        self._sweeper.join(5)
        self.db.close()
        self.store.close()

    def run_forever(self) -> None:
        """Until SIGTERM / SIGINT."""
        def on_signal(signum: int, _frame: Any) -> None:
            self.stop_event.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        self.start()
        while not self.stop_event.wait(0.5):
            if not self.worker._thread.is_alive():
                break
        self.stop()


def main(argv: list[str] | None = None) -> None:
    """``python -m sdl.service.worker_process --instrument NAME --store URL`` (what `sdl worker` does)."""
    import argparse

    ap = argparse.ArgumentParser(prog="sdl worker")
    ap.add_argument("--instrument", required=True)
    ap.add_argument("--store")
    ap.add_argument("--config")
    ap.add_argument("--worker-id")
    ap.add_argument("--time-scale", type=float)
    args = ap.parse_args(argv)
    run(args.instrument, args.store, args.config, args.worker_id, args.time_scale)


def run(instrument: str, store: str | None, config: str | None = None, worker_id: str | None = None,
        time_scale: float | None = None, on_ready: Any = None) -> None:
    import warnings

    from sdl.service.settings import load_settings

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in ("bluesky", "ophyd", "caproto", "ax", "botorch", "matplotlib"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    settings = load_settings(config, store_url=store)
    from sdl.instruments import check_instrument_name

    check_instrument_name(instrument)
    if time_scale is not None:
        cfg = settings.instrument(instrument) or InstrumentConfig(name=instrument)
        cfg = cfg.model_copy(update={"time_scale": time_scale})
        settings = settings.model_copy(update={"instruments": [c for c in settings.instruments
                                                               if c.name != instrument] + [cfg]})
    proc = WorkerProcess(settings, instrument, worker_id)
    if on_ready is not None:
        on_ready(proc)
    proc.run_forever()


if __name__ == "__main__":  # pragma: no cover
    main()

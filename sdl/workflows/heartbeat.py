"""A lease renewed by a thread of its own while the work it guards goes on.

The station worker's task lease and the campaign runner's lease are renewed so: the work
(a measurement, an agent's fit) may take longer than the lease, so renewing between steps
of the work is not enough.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable

log = logging.getLogger(__name__)


class Heartbeat:
    """Call ``renew`` every ``every_s`` seconds until :meth:`stop`. ``renew`` returns False when
    the lease is someone else's now: the beat stops and :attr:`lost` is set. An exception (the
    store briefly unreachable) is logged and the next beat tries again."""

    def __init__(self, renew: Callable[[], bool], every_s: float, name: str, level: int = logging.WARNING):
        self.renew = renew
        self.level = level
        self.every_s = every_s
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> Heartbeat:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                if not self.renew():
                    self.lost.set()
                    return
            except Exception as exc:  # noqa: BLE001 - the store is away: try again next beat
                log.log(self.level, "%s: could not renew the lease (%s: %s); trying again", self._thread.name,
                        type(exc).__name__, exc)

    def stop(self, timeout: float | None = 30.0) -> None:
        """Stop beating; returns when no renewal is under way (so a release after it stays released)."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)

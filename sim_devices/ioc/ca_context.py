"""caproto's asyncio CA server with the latency of a simulator on loopback, and ordered replies.

Two changes to caproto 1.3's server (measured in ``docs/epics.md``, "Speed"):

- **Monitors go out at once.** caproto's per-circuit subscription loop batches updates:
  after the first update of a burst it keeps waiting ``HIGH_LOAD_TIMEOUT`` for more
  before sending, so the last update of every burst (``DMOV`` 1 of a move, ``BUSY`` 0
  of a command) left about 1 ms late, and each wait cost an ``asyncio.wait_for`` task.
  Here the loop sends whatever is queued as one buffer, as soon as it runs.
- **A put-completion reply follows the monitors posted before it.** caproto sends a
  ``WriteNotifyResponse`` straight onto the circuit, while monitor updates pass two
  queues first, so the reply could overtake them: a client that trusted its monitors
  after put-completion could read the previous ``SPECTRUM`` or ``ERR_CODE``. An EPICS
  IOC (rsrv) posts a record's monitors while it processes and replies after; here the
  updates queued before the reply are written ahead of it, in the same buffer (one
  send, one wake-up of the client). Clients (``sdl.devices.CommandSignal``) can then
  conclude from monitors, with no get.

Also: TCP_NODELAY on every circuit (caproto leaves Nagle on: small replies then waited
~40 ms for the client's delayed ACK).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Any

import caproto as ca
from caproto.asyncio.server import Context, VirtualCircuit
from caproto.server.common import DisconnectedCircuit

#: longest a put-completion reply waits for an update the context is still handing out
#: (only when a circuit's queue is full: a client far behind)
FLUSH_TIMEOUT_S = 2.0


class FastCircuit(VirtualCircuit):
    """A client circuit: immediate monitor sends; a put-completion reply after (and with)
    the monitors posted before it."""

    async def subscription_queue_loop(self) -> None:
        self.events_on.set()
        queue = self.subscription_queue
        while True:
            try:
                refs = [await queue.get()]
            except asyncio.CancelledError:
                break
            try:
                commands = self._take_queued(refs)
                if commands:
                    await self.send(*commands)
            except DisconnectedCircuit:
                await self._on_disconnect()
                self.circuit.disconnect()
                await self.context.circuit_disconnected(self)
                break
            except asyncio.CancelledError:
                break

    def _take_queued(self, refs: list[Any]) -> list[Any]:
        """Everything queued for this circuit now (after ``refs``), as commands to send. No
        await comes between taking them and writing them, so nothing can overtake them."""
        queue = self.subscription_queue
        while True:
            try:
                refs.append(queue.get_nowait())
            except asyncio.QueueEmpty:
                break
        # None: superseded by a newer update of the same subscription (a slow client),
        # dropped as caproto drops it. Updates of subscriptions cancelled since they were
        # queued are not sent (caproto's rule too).
        live = {sub.subscriptionid for subs in self.subscriptions.values() for sub in subs}
        return [c for c in (r() for r in refs) if c is not None and c.subscriptionid in live]

    async def send(self, *commands: Any) -> None:
        if any(isinstance(c, ca.WriteNotifyResponse) for c in commands):
            commands = (*await self.monitors_before_reply(), *commands)
        await super().send(*commands)

    async def monitors_before_reply(self) -> list[Any]:
        """The monitor updates posted so far that this circuit has not sent: the context's
        queue is handed out now (what its loop would do next), then this circuit's taken."""
        await self.context.distribute_queued()
        return self._take_queued([])


class FastContext(Context):
    """caproto's asyncio Context with :class:`FastCircuit` circuits."""

    CircuitClass = FastCircuit

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        #: an update taken by the loop and not yet handed to the circuits' queues
        self._handing_out = False

    async def subscription_queue_loop(self) -> None:
        queue = self.subscription_queue
        while True:
            item = await queue.get()
            self._handing_out = True
            try:
                await self._subscription_queue_iteration(*item)
            finally:
                self._handing_out = False

    async def distribute_queued(self) -> None:
        """Hand every queued update to its circuits' queues now, in order."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + FLUSH_TIMEOUT_S
        # The loop holds an update across a suspension only while a circuit's queue is
        # full; let it finish that one first (order), within the deadline.
        while self._handing_out and loop.time() < deadline:
            await asyncio.sleep(0.001)
        queue = self.subscription_queue
        while True:
            try:
                item = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            await self._subscription_queue_iteration(*item)

    async def tcp_handler(self, client: Any, addr: Any) -> Any:
        with contextlib.suppress(Exception):
            sock = client.writer.get_extra_info("socket")
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return await super().tcp_handler(client, addr)


__all__ = ["FLUSH_TIMEOUT_S", "FastCircuit", "FastContext"]

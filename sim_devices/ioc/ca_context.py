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
  reply waits until every update queued before it has been written to the circuit.
  Clients (``sdl.devices.CommandSignal``) can then conclude from monitors, with no get.

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

#: longest a put-completion reply waits for the monitors before it (a stuck client)
FLUSH_TIMEOUT_S = 2.0


class _CountingQueue(asyncio.Queue):
    """An asyncio.Queue that counts what was ever put in it (``put`` ends in ``put_nowait``)."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.puts = 0

    def put_nowait(self, item: Any) -> None:
        super().put_nowait(item)
        self.puts += 1


class _Progress:
    """How many queued items a loop has finished, and a wait for that number to grow."""

    def __init__(self) -> None:
        self.done = 0
        self._event = asyncio.Event()

    def advance(self, n: int = 1) -> None:
        self.done += n
        self._event.set()

    async def reach(self, target: int, deadline: float) -> bool:
        loop = asyncio.get_running_loop()
        while self.done < target:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            self._event.clear()
            try:
                await asyncio.wait_for(self._event.wait(), remaining)
            except asyncio.TimeoutError:
                return False
        return True


class FastCircuit(VirtualCircuit):
    """A client circuit: immediate monitor sends; put-completion after earlier monitors."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.subscription_queue = _CountingQueue(ca.MAX_TOTAL_SUBSCRIPTION_BACKLOG)
        self.sub_progress = _Progress()

    async def subscription_queue_loop(self) -> None:
        self.events_on.set()
        queue = self.subscription_queue
        while True:
            try:
                refs = [await queue.get()]
            except asyncio.CancelledError:
                break
            while True:
                try:
                    refs.append(queue.get_nowait())
                except asyncio.QueueEmpty:
                    break
            try:
                # None: superseded by a newer update of the same subscription (a slow
                # client), dropped as caproto drops it. Updates of subscriptions
                # cancelled since they were queued are not sent (caproto's rule too).
                live = {sub.subscriptionid for subs in self.subscriptions.values() for sub in subs}
                commands = [c for c in (r() for r in refs) if c is not None and c.subscriptionid in live]
                if commands:
                    await self.send(*commands)
            except DisconnectedCircuit:
                await self._on_disconnect()
                self.circuit.disconnect()
                await self.context.circuit_disconnected(self)
                break
            except asyncio.CancelledError:
                break
            finally:
                self.sub_progress.advance(len(refs))

    async def send(self, *commands: Any) -> None:
        if any(isinstance(c, ca.WriteNotifyResponse) for c in commands):
            await self.flush_monitors()
        await super().send(*commands)

    async def flush_monitors(self) -> None:
        """Wait until every monitor update posted so far has been written to this circuit."""
        ctx = self.context
        deadline = asyncio.get_running_loop().time() + FLUSH_TIMEOUT_S
        if await ctx.sub_progress.reach(ctx.subscription_queue.puts, deadline):
            await self.sub_progress.reach(self.subscription_queue.puts, deadline)


class FastContext(Context):
    """caproto's asyncio Context with :class:`FastCircuit` circuits and counted updates."""

    CircuitClass = FastCircuit

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.subscription_queue = _CountingQueue()
        self.sub_progress = _Progress()

    async def subscription_queue_loop(self) -> None:
        queue = self.subscription_queue
        while True:
            sub_specs, metadata, values, flags, sub = await queue.get()
            try:
                await self._subscription_queue_iteration(sub_specs, metadata, values, flags, sub)
            finally:
                self.sub_progress.advance()

    async def tcp_handler(self, client: Any, addr: Any) -> Any:
        with contextlib.suppress(Exception):
            sock = client.writer.get_extra_info("socket")
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return await super().tcp_handler(client, addr)


__all__ = ["FLUSH_TIMEOUT_S", "FastCircuit", "FastContext"]

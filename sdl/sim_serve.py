"""Serve a plug-in instrument's simulated double over Channel Access.

An instrument that has a double sets ``Instrument.simulator = f(prefix, ctx) ->
caproto PVGroup``; ``sdl ioc --instrument NAME`` serves it (blocking), and
:func:`serving` runs it in a thread (tests, demos). The instrument built with
``options={"epics_prefix": prefix}`` then drives it over CA.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
from typing import Any, Iterator

from sdl.errors import InvalidInput


def simulator_group(instrument_name: str, prefix: str, *, seed: int = 0, time_scale: float = 0.0,
                    options: dict | None = None) -> Any:
    """The caproto PVGroup of ``instrument_name``'s double, or :class:`InvalidInput`."""
    from sdl.plugin import BuildContext
    from sdl.registry import registry

    inst = registry().build(instrument_name, seed=seed, time_scale=time_scale, options=options)
    if inst.simulator is None:
        raise InvalidInput("instrument", f"{instrument_name!r} ({inst.source}) has no simulated double to serve",
                           instrument_name)
    return inst.simulator(prefix, BuildContext(seed=seed, time_scale=time_scale, options=dict(options or {})))


def _environment(host: str) -> None:
    for key, value in (("EPICS_CAS_INTF_ADDR_LIST", host), ("EPICS_CAS_AUTO_BEACON_ADDR_LIST", "NO"),
                       ("EPICS_CAS_BEACON_ADDR_LIST", host)):
        os.environ.setdefault(key, value)


async def _serve(group: Any, host: str, port: int, ready: Any = None, on_ready: Any = None) -> None:
    from sdl.sim_devices.ioc.server import make_context

    ctx = make_context(group.pvdb, [host], port)

    async def startup(async_lib: Any) -> None:
        if ready is not None:
            ready.set()
        if on_ready is not None:
            on_ready(ctx)

    await ctx.run(startup_hook=startup)


def run_simulator(instrument_name: str, prefix: str, *, port: int, host: str = "127.0.0.1", seed: int = 0,
                  options: dict | None = None) -> None:
    """Serve until interrupted: the body of ``sdl ioc --instrument NAME`` for a plug-in's double."""
    from sdl.sim_devices.ioc.server import quiet_caproto_logs

    group = simulator_group(instrument_name, prefix, seed=seed, options=options)
    _environment(host)
    quiet_caproto_logs()

    async def main() -> None:
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, task.cancel)
        await _serve(group, host, port, on_ready=lambda ctx: print(
            f"READY {prefix} {host}:{port} {len(group.pvdb)} PVs", flush=True))

    with contextlib.suppress(KeyboardInterrupt, asyncio.CancelledError):
        asyncio.run(main())


@contextlib.contextmanager
def serving(instrument_name: str, prefix: str, *, port: int, host: str = "127.0.0.1", seed: int = 0,
            options: dict | None = None, timeout: float = 20.0) -> Iterator[Any]:
    """Serve the double in a daemon thread of this process while the block runs; yields the PVGroup."""
    group = simulator_group(instrument_name, prefix, seed=seed, options=options)
    _environment(host)
    ready = threading.Event()
    loop = asyncio.new_event_loop()
    errors: list[BaseException] = []

    def main() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(_serve(group, host, port, ready=ready))
        except BaseException as exc:  # noqa: BLE001 - reported to the caller
            if not isinstance(exc, asyncio.CancelledError):
                errors.append(exc)
        finally:
            ready.set()

    thread = threading.Thread(target=main, name=f"sdl-sim-{prefix}", daemon=True)
    thread.start()
    if not ready.wait(timeout) or errors:
        raise RuntimeError(f"the double of {instrument_name} did not start: {errors[:1]}")
    try:
        yield group
    finally:
        def cancel() -> None:
            for t in asyncio.all_tasks(loop):
                t.cancel()

        loop.call_soon_threadsafe(cancel)
        thread.join(10)

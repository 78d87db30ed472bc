"""Soft IOCs (caproto) that serve the simulated lab over Channel Access.

The PVs are those a real beamline and robot IOCs would have (``docs/pv-layout.md``);
the IOC wraps a :class:`~sdl.sim_devices.lab.SimLab` and forwards to its in-process
devices, so the same physics answers over either transport.

- :func:`serve_sim_lab` (context manager) / :func:`start_ioc`: serve in a thread or a
  subprocess, on a given host, port and PV prefix; ``.stop()`` ends it.
- :func:`run_ioc`: serve until interrupted (``sdl ioc``, ``python -m sdl.sim_devices.ioc``).
- :func:`list_pvs` / :func:`pv_table_markdown`: the PV layout.
"""

from sdl.sim_devices.ioc.server import (
    DEFAULT_PORT,
    DEFAULT_PREFIX,
    IOC_ALIASES,
    IOC_NAMES,
    IOC_PREFIXES,
    RunningIOC,
    SimLabIOC,
    list_pvs,
    loopback_environment,
    pv_table_markdown,
    resolve_names,
    run_ioc,
    serve_sim_lab,
    start_ioc,
)

__all__ = [
    "DEFAULT_PORT", "DEFAULT_PREFIX", "IOC_ALIASES", "IOC_NAMES", "IOC_PREFIXES", "RunningIOC", "SimControl", "SimLabIOC",
    "list_pvs", "loopback_environment", "pv_table_markdown", "resolve_names", "run_ioc", "serve_sim_lab",
    "start_ioc",
]


def __getattr__(name: str):
    # The client class imports ophyd (which starts libca): only when asked for.
    if name == "SimControl":
        from sdl.sim_devices.ioc.client import SimControl

        return SimControl
    raise AttributeError(name)

"""Channel Access on loopback: a free port, and the environment set before libca starts.

pyepics (ophyd's control layer) reads the EPICS environment once, when libca starts
(importing ophyd starts it). :func:`configure_loopback_ca` must therefore run before
ophyd is imported: it keeps CA on 127.0.0.1 and picks a free port for this process
(``EPICS_CA_SERVER_PORT``, for both the soft IOCs and the clients), so processes
running side by side never answer each other's searches. Production code (``sdl
demo --epics``, ``sdl ioc``) and the test kit (:mod:`sdl.testing`) both use it.
"""

from __future__ import annotations

import os
import socket
import sys

LOOPBACK = "127.0.0.1"
_ENV_FLAG = "SDL_TEST_CA_PORT"


def free_port(host: str = LOOPBACK) -> int:
    """A port free for both TCP and UDP on ``host`` (bound without SO_REUSEADDR to check)."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind((host, 0))
            port = tcp.getsockname()[1]
        if port < 20000:
            continue
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, \
                    socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp2:
                udp.bind((host, port))
                tcp2.bind((host, port))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port found")


def libca_started() -> bool:
    mod = sys.modules.get("epics.ca")
    return mod is not None and getattr(mod, "libca", None) is not None


def configure_loopback_ca(port: int | None = None) -> int:
    """Keep Channel Access on loopback with a port of this process's own; returns the port.

    Sets (unless already set) ``EPICS_CA_AUTO_ADDR_LIST=NO``, ``EPICS_CA_ADDR_LIST``,
    ``EPICS_CAS_INTF_ADDR_LIST``, the beacon lists, and ``EPICS_CA_SERVER_PORT`` (a free
    port, or ``port``). Idempotent: later calls return the same port. Call it before
    importing ophyd/epics; once libca has started, the environment is left alone and
    the port libca uses is returned.
    """
    env = os.environ
    configured = env.get(_ENV_FLAG) and env.get("EPICS_CA_SERVER_PORT") == env[_ENV_FLAG]
    if configured and (port is None or int(port) == int(env[_ENV_FLAG])):
        return int(env[_ENV_FLAG])
    if libca_started():
        return int(env.get("EPICS_CA_SERVER_PORT", "5064"))
    for key, value in (
        ("EPICS_CA_AUTO_ADDR_LIST", "NO"),
        ("EPICS_CA_ADDR_LIST", LOOPBACK),
        ("EPICS_CAS_INTF_ADDR_LIST", LOOPBACK),
        ("EPICS_CAS_AUTO_BEACON_ADDR_LIST", "NO"),
        ("EPICS_CAS_BEACON_ADDR_LIST", LOOPBACK),
    ):
        env.setdefault(key, value)
    chosen = int(port) if port is not None else free_port()
    env["EPICS_CA_SERVER_PORT"] = str(chosen)
    env[_ENV_FLAG] = str(chosen)
    return chosen


_prefix_counter = 0


def unique_prefix(tag: str = "T") -> str:
    """A PV prefix no other process uses (``SDL<tag><pid>x<n>:``)."""
    global _prefix_counter
    _prefix_counter += 1
    return f"SDL{tag}{os.getpid()}x{_prefix_counter}:"


def stop_ca_callbacks() -> None:
    """Stop ophyd's Channel Access callback threads now, before the interpreter exits.

    At exit pyepics finalises libca (an ``atexit`` hook registered when libca started,
    which is after ophyd was imported, so it runs *before* ophyd's own clean-up): a
    metadata thread ophyd started for a PV that just connected may still be inside a CA
    call then, and the process can die with SIGSEGV after its work is done (seen with
    ``sdl instruments show`` on a TOML profile of EPICS devices). A no-op when ophyd's
    pyepics layer was never used."""
    import sys

    shim = sys.modules.get("ophyd._pyepics_shim")
    dispatcher = getattr(shim, "_dispatcher", None)
    if dispatcher is not None and dispatcher.is_alive():
        dispatcher.stop()
        shim._dispatcher = None  # ophyd's own clean-up at exit then has nothing to do

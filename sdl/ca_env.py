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
import random
import socket
import sys

LOOPBACK = "127.0.0.1"
_ENV_FLAG = "SDL_TEST_CA_PORT"
PORT_RANGE_ENV = "SDL_CA_PORT_RANGE"
_LOWEST = 20000


def ephemeral_range() -> tuple[int, int]:
    """The kernel's range for ports it hands out on its own (outgoing connections, bind to 0)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            lo, hi = (int(v) for v in f.read().split())
        return lo, hi
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def port_range() -> tuple[int, int]:
    """Where :func:`free_port` looks: ``$SDL_CA_PORT_RANGE`` (``LO-HI``, inclusive), else from
    20000 up to the start of the ephemeral range. A port there is never taken by the kernel
    for some process's outgoing socket, which would silently share a soft IOC's UDP search
    port and swallow the searches meant for it."""
    raw = os.environ.get(PORT_RANGE_ENV)
    if raw:
        try:
            lo, hi = (int(v) for v in raw.split("-"))
        except ValueError:
            raise ValueError(f"{PORT_RANGE_ENV}={raw!r}: expected LO-HI, e.g. 20000-25999") from None
        if not 1024 <= lo <= hi <= 65535:
            raise ValueError(f"{PORT_RANGE_ENV}={raw!r}: expected 1024 <= LO <= HI <= 65535")
        return lo, hi
    lo = ephemeral_range()[0]
    return (_LOWEST, lo - 1) if lo - _LOWEST >= 1000 else (_LOWEST, 65535)


def free_port(host: str = LOOPBACK) -> int:
    """A port free for both TCP and UDP on ``host`` (bound without SO_REUSEADDR to check),
    drawn at random from :func:`port_range`."""
    lo, hi = port_range()
    rng = random.SystemRandom()  # independent of any seeding of the random module
    for _ in range(500):
        port = rng.randint(lo, hi)
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, \
                    socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                udp.bind((host, port))
                tcp.bind((host, port))
        except OSError:
            continue
        return port
    raise RuntimeError(f"no free port found in {lo}-{hi}")


def libca_started() -> bool:
    mod = sys.modules.get("epics.ca")
    return mod is not None and getattr(mod, "libca", None) is not None


def configure_loopback_ca(port: int | None = None, *, fresh: bool = False) -> int:
    """Keep Channel Access on loopback with a port of this process's own; returns the port.

    Sets (unless already set) ``EPICS_CA_AUTO_ADDR_LIST=NO``, ``EPICS_CA_ADDR_LIST``,
    ``EPICS_CAS_INTF_ADDR_LIST``, the beacon lists, and ``EPICS_CA_SERVER_PORT`` (a free
    port, or ``port``). Idempotent: later calls return the same port. Call it before
    importing ophyd/epics; once libca has started, the environment is left alone and
    the port libca uses is returned. A child process inherits its parent's port (a soft IOC
    started by a test serves where the test's client searches); ``fresh=True`` picks a port
    of this process's own instead (a pytest-xdist worker beside its siblings).
    """
    env = os.environ
    if fresh and not libca_started():
        env.pop(_ENV_FLAG, None)
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

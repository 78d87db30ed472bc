"""Instruments by name: a front to the plug-in registry (:mod:`sdl.registry`).

The core asks for an instrument by name and gets an :class:`sdl.plugin.Instrument`;
which instruments exist is whatever the entry points and profiles say. sdl's own
(sim-xrd, the pools) are registered in its pyproject.toml like anyone else's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Iterator

from sdl.plugin import Instrument


class _Names(Mapping):
    """``INSTRUMENTS``: name -> factory, read from the registry each time (kept for callers
    that check membership or list names)."""

    def __getitem__(self, name: str) -> Any:
        from sdl.registry import registry

        return registry().get("instruments", name)

    def __iter__(self) -> Iterator[str]:
        from sdl.registry import registry

        return iter(registry().names("instruments"))

    def __len__(self) -> int:
        from sdl.registry import registry

        return len(registry().names("instruments"))

    def __contains__(self, name: object) -> bool:
        from sdl.registry import registry

        return isinstance(name, str) and registry().entry("instruments", name) is not None


INSTRUMENTS: Mapping[str, Any] = _Names()


def instrument_names() -> list[str]:
    from sdl.registry import registry

    return registry().names("instruments")


def check_instrument_name(name: str) -> str:
    from sdl.registry import registry

    registry().get("instruments", name)  # raises InvalidInput naming what is allowed (and why one is broken)
    return name


def make_instrument(
    name: str, *, seed: int = 0, time_scale: float = 0.0, n_slots: int = 24, options: dict | None = None
) -> Instrument:
    from sdl.registry import registry

    return registry().build(name, seed=seed, time_scale=time_scale, n_slots=n_slots, options=options)


__all__ = ["INSTRUMENTS", "Instrument", "check_instrument_name", "instrument_names", "make_instrument"]

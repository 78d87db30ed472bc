"""Where instruments, reductions and agents come from: entry points and profiles.

- Entry points: groups ``sdl.instruments`` (name -> factory ``build(ctx) -> Instrument``),
  ``sdl.reductions`` (name -> ``reduce(start, events, params) -> {objective: value}``),
  ``sdl.agents`` (name -> ``make(space, objectives, seed, **options) -> Agent``). sdl's
  own built-ins are registered the same way, in sdl's pyproject.toml.
- A name with ``*`` registers a family (``"table:*.csv"``): any name it matches
  (``fnmatch``) is built by that factory, which reads the full name from ``ctx.name``.
- A profile (``--profile PATH`` on every command, or ``SDL_PROFILE``; several paths
  separated by ``os.pathsep``): a Python file that defines ``INSTRUMENTS = {name:
  factory}`` (and optionally ``REDUCTIONS``, ``AGENTS``), or a declarative TOML file of
  stock EPICS devices (:mod:`sdl.profile_toml`).

A plug-in that fails to load is kept as a :class:`Broken` entry (where it came from,
the error) and reported by ``sdl instruments list``; the others work.
"""

from __future__ import annotations

import fnmatch
import importlib.metadata as md
import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from pydantic import ValidationError

from sdl.errors import InvalidInput

log = logging.getLogger(__name__)

GROUPS = {"instruments": "sdl.instruments", "reductions": "sdl.reductions", "agents": "sdl.agents"}
PROFILE_ENV = "SDL_PROFILE"


@dataclass
class Entry:
    """One plug-in: its name, where it came from, and how to get the object."""

    kind: str  # instruments | reductions | agents
    name: str
    source: str  # 'entry point GROUP: NAME = module:attr (DIST VERSION)' or 'profile PATH'
    loader: Callable[[], Any]
    _obj: Any = field(default=None, repr=False)
    error: str = ""

    def load(self) -> Any:
        if self._obj is None:
            self._obj = self.loader()
        return self._obj


@dataclass
class Broken:
    kind: str
    name: str
    source: str
    error: str


class Registry:
    def __init__(self, profiles: list[str] | None = None):
        self.entries: dict[str, dict[str, Entry]] = {k: {} for k in GROUPS}
        self.broken: list[Broken] = []
        self.profiles = list(profiles or [])
        self._load_entry_points()
        for path in self.profiles:
            self._load_profile(path)

    # ------------------------------------------------------------- loading
    def _load_entry_points(self) -> None:
        for kind, group in GROUPS.items():
            try:
                eps = md.entry_points(group=group)
            except Exception as exc:  # noqa: BLE001 - a broken distribution's metadata
                self.broken.append(Broken(kind, "*", f"entry points {group}", f"{type(exc).__name__}: {exc}"))
                continue
            for ep in eps:
                dist = getattr(ep, "dist", None)
                where = f"{dist.name} {dist.version}" if dist is not None else "?"
                source = f"entry point {group}: {ep.name} = {ep.value} ({where})"
                self.add(kind, ep.name, source, ep.load)
        if not self.entries["instruments"]:
            self.broken.append(Broken(
                "instruments", "*", "entry points sdl.instruments",
                "no instrument is registered: is sdl installed (pip install -e .)? A stale sdl.egg-info folder "
                "in the working directory hides the installed entry points: delete it"))

    def add(self, kind: str, name: str, source: str, loader: Callable[[], Any]) -> None:
        if name in self.entries[kind]:
            prev = self.entries[kind][name]
            self.broken.append(Broken(kind, name, source, f"the name is already taken by {prev.source}; ignored"))
            return
        self.entries[kind][name] = Entry(kind, name, source, loader)

    def _load_profile(self, path: str) -> None:
        p = Path(path).expanduser()
        source = f"profile {p}"
        try:
            if not p.is_file():
                raise InvalidInput("profile", "no such file (a .py or .toml profile)", str(p))
            if p.suffix == ".toml":
                from sdl.profile_toml import load_toml_profile

                found = load_toml_profile(p)
            elif p.suffix == ".py":
                found = _load_python_profile(p)
            else:
                raise InvalidInput("profile", "allowed: a .py (Python) or .toml (declarative) file", str(p))
        except Exception as exc:  # noqa: BLE001 - reported, the rest keeps working
            self.broken.append(Broken("profile", str(p), source, f"{type(exc).__name__}: {exc}"))
            return
        for kind, items in found.items():
            for name, obj in items.items():
                self.add(kind, name, source, (lambda o=obj: o))

    # -------------------------------------------------------------- lookups
    def names(self, kind: str = "instruments") -> list[str]:
        """Registered names (families, names with ``*``, are in :meth:`patterns`)."""
        return sorted(n for n in self.entries[kind] if "*" not in n)

    def patterns(self, kind: str = "instruments") -> list[str]:
        return sorted(n for n in self.entries[kind] if "*" in n)

    def entry(self, kind: str, name: str) -> Entry | None:
        """The entry for ``name``: registered under it, or a family whose pattern matches it."""
        e = self.entries[kind].get(name)
        if e is None and "*" not in name:
            e = next((self.entries[kind][p] for p in self.patterns(kind) if fnmatch.fnmatchcase(name, p)), None)
        return e

    def get(self, kind: str, name: str) -> Any:
        """The loaded object, or :class:`InvalidInput` naming what is allowed (and why a
        broken one is broken)."""
        entry = self.entry(kind, name)
        singular = kind[:-1]
        if entry is None:
            broken = [b for b in self.broken if b.kind == kind and b.name == name]
            why = f"; it failed to load from {broken[0].source}: {broken[0].error}" if broken else ""
            profiles = [b for b in self.broken if b.kind == "profile"]  # filed under their path: it may be in one
            if profiles and not broken:
                why = "; a profile that did not load may define it: " + "; ".join(
                    f"{b.name}: {b.error}" for b in profiles)
            fams = f" or a name matching {self.patterns(kind)}" if self.patterns(kind) else ""
            raise InvalidInput(singular, f"unknown {singular}{why}; allowed: {self.names(kind)}{fams}", name)
        try:
            return entry.load()
        except Exception as exc:  # noqa: BLE001 - named with its entry point
            raise InvalidInput(singular, f"{name!r} from {entry.source} cannot be loaded: "
                               f"{type(exc).__name__}: {exc}") from exc

    def reduction(self, name: str) -> Callable | None:
        if self.entry("reductions", name) is None:
            return None
        return self.get("reductions", name)

    def reduction_names(self) -> list[str]:
        return self.names("reductions")

    def source(self, kind: str, name: str) -> str:
        e = self.entry(kind, name)
        return e.source if e else ""

    def build(self, name: str, *, seed: int = 0, time_scale: float = 0.0, n_slots: int = 24,
              options: dict | None = None):
        """Build instrument ``name``; a factory that fails is named with its entry point."""
        from sdl.plugin import BuildContext, Instrument, PluginError

        factory = self.get("instruments", name)
        entry = self.entry("instruments", name)
        ctx = BuildContext(seed=seed, time_scale=time_scale, n_slots=n_slots, options=dict(options or {}), name=name)
        try:
            inst = factory(ctx) if callable(factory) and not isinstance(factory, Instrument) else factory
        except (PluginError, InvalidInput):
            raise
        except ValidationError as exc:  # a space or objective built wrong: the model and field, not pydantic's dump
            raise PluginError(name, "factory", f"{entry.source} failed: {pydantic_said(exc)}") from exc
        except Exception as exc:  # noqa: BLE001
            raise PluginError(name, "factory", f"{entry.source} failed: {type(exc).__name__}: {exc}") from exc
        if not isinstance(inst, Instrument):
            raise PluginError(name, "factory", f"{entry.source} returned {type(inst).__name__}; allowed: "
                              "sdl.plugin.Instrument")
        if inst.name != name:
            raise PluginError(name, "name", f"the factory built an instrument named {inst.name!r}; it must be "
                              f"{name!r} (the registered name)")
        inst.source = entry.source
        return inst

    def check_all(self) -> list[Broken]:
        """Build every instrument once (nothing connected beyond what its factory does);
        returns the ones that fail, with their error."""
        bad = list(self.broken)
        for name in self.names("instruments"):
            try:
                self.build(name)
            except Exception as exc:  # noqa: BLE001 - reported
                bad.append(Broken("instruments", name, self.source("instruments", name), str(exc)))
        return bad


def _load_python_profile(path: Path) -> dict[str, dict[str, Any]]:
    """Run a Python profile; it defines ``INSTRUMENTS`` (name -> factory), and optionally
    ``REDUCTIONS`` and ``AGENTS``."""
    import importlib.util
    import sys

    mod_name = f"sdl_profile_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(mod_name, path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules[mod_name] = module
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    found: dict[str, dict[str, Any]] = {}
    for kind, attr in (("instruments", "INSTRUMENTS"), ("reductions", "REDUCTIONS"), ("agents", "AGENTS")):
        items = getattr(module, attr, None)
        if items is None:
            continue
        if not isinstance(items, dict):
            raise InvalidInput(f"{path.name}: {attr}", "must be a dict of name -> object", type(items).__name__)
        found[kind] = dict(items)
    if not found:
        raise InvalidInput(f"{path.name}", "defines none of INSTRUMENTS, REDUCTIONS, AGENTS (dicts of name -> "
                           "factory)")
    return found


_lock = threading.Lock()
_current: tuple[tuple[str, ...], Registry] | None = None


def profile_paths() -> tuple[str, ...]:
    raw = os.environ.get(PROFILE_ENV, "")
    return tuple(p for p in raw.split(os.pathsep) if p.strip())


def registry() -> Registry:
    """The registry for the current ``SDL_PROFILE`` (rebuilt when it changes)."""
    global _current
    paths = profile_paths()
    with _lock:
        if _current is None or _current[0] != paths:
            _current = (paths, Registry(list(paths)))
        return _current[1]


def reset() -> None:
    """Forget the loaded registry (after installing a package, in tests)."""
    global _current
    with _lock:
        _current = None


# ---------------------------------------------------------------------- agents
def agent_names() -> list[str]:
    """sdl's agents (:data:`sdl.agents.AGENTS`) and those of ``sdl.agents`` entry points / profiles."""
    from sdl.agents import AGENTS

    return sorted(set(AGENTS) | set(registry().names("agents")))


def check_agent(name: str) -> str:
    from sdl.agents import AGENTS

    if name in AGENTS:
        return name
    reg = registry()
    if reg.entry("agents", name) is not None:
        return name
    raise InvalidInput("agent", f"unknown agent; allowed: {agent_names()}", name)


def make_agent(name: str, space: Any, objectives: Any, seed: int = 0, **options: Any) -> Any:
    """Build agent ``name``: sdl's own, or a plug-in's factory ``(space, objectives, seed, **options)``."""
    from sdl.agents import AGENTS
    from sdl.agents import make_agent as _builtin

    if name in AGENTS:
        return _builtin(name, space, objectives, seed=seed, **options)
    factory = registry().get("agents", check_agent(name))
    agent = factory(space, list(objectives), seed, **options)
    for method in ("ask", "tell"):
        if not callable(getattr(agent, method, None)):
            raise InvalidInput("agent", f"plug-in agent {name!r} ({registry().source('agents', name)}) has no "
                               f"{method}(); an agent needs ask(n), tell(observations), add_pending(points)")
    return agent


def pydantic_said(exc: ValidationError) -> str:
    """One line for a model a plug-in built wrong: ``RangeParameter.upper: Input should be a
    valid number (got 'a')``, and how many more errors there are."""
    from sdl.errors import shown
    from sdl.space import validation_message

    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"])
    text = f"{exc.title}{'.' + where if where else ''}: {validation_message(err)}"
    if "input" in err and not isinstance(err["input"], dict):
        text += f" (got {shown(err['input'])})"
    more = exc.error_count() - 1
    return text + (f" (and {more} more)" if more else "")

"""``sdl instruments list|show`` and ``--profile PATH`` on every command.

``register(app)`` adds the ``instruments`` group and gives every command of ``app``
(and of its sub-apps) a ``--profile PATH`` option (repeatable); ``SDL_PROFILE`` does
the same from the environment (paths separated by ``os.pathsep``). A profile is a
Python file defining instruments or a declarative TOML file (:mod:`sdl.registry`).
Call it after every other command is registered.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import typing
from pathlib import Path
from typing import Any, Callable, Optional

import typer
from rich.table import Table

from sdl.cli.output import console, err_console
from sdl.errors import InvalidInput

instruments_app = typer.Typer(help="Instruments available here (entry points and profiles).", no_args_is_help=True)

PROFILE_HELP = ("a profile that adds instruments: a Python file or a declarative TOML file of EPICS devices "
                "(repeatable; also $SDL_PROFILE)")


def use_profiles(paths: list[str] | None, strict: bool = True) -> None:
    """Add ``paths`` to ``SDL_PROFILE`` (absolute, so worker processes find them) and reload the
    registry. ``strict``: one of ``paths`` that does not load is an error (``sdl instruments``
    reports it among the broken entries instead)."""
    from sdl.registry import PROFILE_ENV, profile_paths, reset

    if not paths:
        return
    current = list(profile_paths())
    for p in paths:
        ap = str(Path(p).expanduser().resolve())
        if ap not in current:
            current.append(ap)
    os.environ[PROFILE_ENV] = os.pathsep.join(current)
    reset()
    # a profile named on the command line must load: the command would otherwise run without
    # its instruments (SDL_PROFILE's are only reported, by sdl instruments list)
    from sdl.registry import registry

    given = {str(Path(p).expanduser().resolve()) for p in paths}
    for b in registry().broken if strict else ():
        if b.kind == "profile" and str(Path(b.name).resolve()) in given:
            raise InvalidInput("profile", f"{b.name} does not load: {b.error}")


def _with_profile(fn: Callable[..., Any], strict: bool = True) -> Callable[..., Any]:
    sig = inspect.signature(fn, eval_str=True)
    if "profile" in sig.parameters:
        return fn
    hints = typing.get_type_hints(fn, include_extras=True)

    @functools.wraps(fn)
    def wrapper(*args: Any, profile: Optional[list[str]] = None, **kwargs: Any) -> Any:
        try:
            use_profiles(profile, strict)
        except InvalidInput as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        return fn(*args, **kwargs)

    option = inspect.Parameter("profile", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[list[str]],
                               default=typer.Option(None, "--profile", help=PROFILE_HELP))
    params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) if p.kind is p.POSITIONAL_OR_KEYWORD else p
              for p in sig.parameters.values()]
    wrapper.__signature__ = sig.replace(parameters=params + [option])  # type: ignore[attr-defined]
    wrapper.__annotations__ = {**hints, "profile": Optional[list[str]]}
    del wrapper.__wrapped__  # typer must read the signature above, not the original's
    return wrapper


def add_profile_option(app: typer.Typer) -> None:
    """Give every command of ``app`` and its sub-apps ``--profile PATH`` (a profile that does
    not load stops the command, except ``sdl instruments``, which reports it)."""
    for info in app.registered_commands:
        if info.callback is not None:
            info.callback = _with_profile(info.callback, strict=app is not instruments_app)
    for group in app.registered_groups:
        if group.typer_instance is not None:
            add_profile_option(group.typer_instance)


def register(app: typer.Typer) -> None:
    app.add_typer(instruments_app, name="instruments")
    add_profile_option(app)


# ------------------------------------------------------------------ commands
def _short(source: str) -> str:
    """'sdl-example-alignment 0.1.0' for an entry point, 'profile beamline.toml' for a profile."""
    if source.startswith("entry point") and source.endswith(")") and "(" in source:
        return source[source.rindex("(") + 1:-1]
    if source.startswith("profile "):
        return "profile " + Path(source[len("profile "):]).name
    return source
def _plans_line(inst: Any) -> str:
    return ", ".join(f"{n}*" if n == inst.default_plan else n for n in inst.plan_names)


@instruments_app.command("list")
def list_instruments(as_json: bool = typer.Option(False, "--json", help="print JSON instead of a table")) -> None:
    """Every instrument, where it comes from and its plans; broken plug-ins with their error."""
    from sdl.registry import registry

    reg = registry()
    rows, broken = [], [vars(b) for b in reg.broken]
    for name in reg.names("instruments"):
        try:
            inst = reg.build(name)
        except Exception as exc:  # noqa: BLE001 - reported, the others are listed
            broken.append({"kind": "instruments", "name": name, "source": reg.source("instruments", name),
                           "error": str(exc)})
            continue
        rows.append({"name": name, "source": inst.source, "description": inst.description,
                     "plans": inst.plan_names, "default_plan": inst.default_plan,
                     "parameters": inst.space.names, "objectives": [o.name for o in inst.objectives],
                     "reduction": inst.reduction["name"], "simulated_double": inst.simulator is not None})
    families = {p: reg.source("instruments", p) for p in reg.patterns("instruments")}
    extra = {k: {n: reg.source(k, n) for n in reg.names(k)} for k in ("reductions", "agents")}
    if as_json:
        console.print_json(json.dumps({"instruments": rows, "families": families, "broken": broken, **extra}))
    else:
        from sdl import tables

        cols = (tables.Col("name", whole=True), tables.Col("plans", "plans (* default)"), tables.Col("parameters"),
                tables.Col("objectives"), tables.Col("from"))
        tables.print_rows(console, cols, [
            {"name": r["name"], "plans": ", ".join(f"{p}*" if p == r["default_plan"] else p for p in r["plans"]),
             "parameters": ", ".join(r["parameters"]), "objectives": ", ".join(r["objectives"]),
             "from": _short(r["source"])} for r in rows])
        for pattern, src in families.items():
            console.print(f"instruments named {pattern!r} (any match) from {_short(src)}")
        for kind, items in extra.items():
            if items:
                console.print(f"{kind} from plug-ins: " + ", ".join(items))
        for b in broken:
            err_console.print(f"[bold red]broken[/] {b['kind']} {b['name']!r} from {b['source']}: {b['error']}")
    if broken:
        raise typer.Exit(1)


@instruments_app.command("show")
def show_instrument(
    name: str = typer.Argument(..., help="instrument name"),
    as_json: bool = typer.Option(False, "--json", help="print JSON (the same content)"),
) -> None:
    """One instrument: source, space, objectives, reduction, DOFs, and each plan's JSON schema."""
    from sdl.errors import SdlError
    from sdl.registry import registry

    try:
        inst = registry().build(name)
    except SdlError as exc:
        err_console.print(f"[bold red]error[/]: {exc}")
        raise typer.Exit(2) from None
    out = inst.describe()
    out["plans"] = {p: inst.plan_schema(p) for p in inst.plan_names}
    out["default_plan"] = inst.default_plan
    out["reduction"] = inst.reduction
    if as_json:
        console.print_json(json.dumps(out, default=str))
        return
    console.print(f"[bold]{name}[/]: {inst.description}\nfrom {inst.source}")
    console.print("objectives: " + ", ".join(f"{o.name} ({o.direction})" for o in inst.objectives))
    console.print(f"reduction: {inst.reduction['name']}; DOFs (moved before the plan): {sorted(inst.dofs) or '-'}")
    for p in inst.plan_names:
        console.print(f"\nplan [bold]{p}[/]{' (default)' if p == inst.default_plan else ''}")
        console.print_json(json.dumps(out["plans"][p], default=str))


@instruments_app.command("check")
def check(
    name: str = typer.Argument(..., help="instrument name"),
    points: int = typer.Option(2, min=1, max=50, help="points of its space to run"),
    seed: int = typer.Option(0, min=0),
) -> None:
    """Conformance of an instrument: schemas, one run per point, start document, reduction, replay, limits."""
    from sdl.instrument_check import check_instrument

    results = check_instrument(name, points=points, seed=seed)
    table = Table("check", "result")
    for k, v in results.items():
        table.add_row(k, "[green]ok[/]" if v == "ok" else f"[red]{v}[/]")
    console.print(table)
    if any(v != "ok" for v in results.values()):
        raise typer.Exit(1)

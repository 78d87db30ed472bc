"""``sdl campaign run|resume|list|show|replay``: campaigns in a store, run in this process."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer

from sdl import tables
from sdl.cli.apps import campaign_app
from sdl.cli.output import RichProgress, console, err_console, fail, open_store, progress_bar, quiet_libraries
from sdl.errors import SdlError


def run_campaign(store, campaign_id: str, label: str, instrument: Any = None) -> str:
    """Run a stored campaign here with a progress bar; its final status ("failed" also when every
    experiment ended without a value of the objective: a plug-in that cannot work)."""
    from sdl.campaign import CampaignRunner, check_local

    try:
        runner = CampaignRunner(store, campaign_id, progress=None, instrument=instrument)
    except SdlError as exc:  # an instrument that cannot be built (a plug-in's error, a PV that does not connect)
        fail(exc)
    try:
        check_local(runner.spec)  # a service's campaign resumed here: said before the progress bar
    except SdlError as exc:
        fail(exc)
    with progress_bar() as progress:
        runner.progress = RichProgress(progress, label, runner.objectives[0].name)
        status = runner.run()
    if status == "interrupted":
        console.print(f"[yellow]interrupted[/]; nothing is lost. Continue with: sdl campaign resume {campaign_id}")
    name = runner.objectives[0].name
    obs = store.observations(campaign_id)
    if status == "completed" and obs and not any(o.ok and o.values.get(name) is not None for o in obs):
        # a plug-in whose plan or reduction cannot work: every run ended, none measured anything
        first = next((o.extra.get("error") for o in obs if not o.ok), None)
        err_console.print(f"[bold red]error[/]: none of the {len(obs)} experiments gave a value of {name!r}"
                          + (f"; the first failed: {first}" if first else "")
                          + f" (sdl campaign show {campaign_id})")
        return "failed"
    return status


def table_options(instrument: Optional[str], objective: Optional[str], categorical: list[str],
                  ignore: list[str] = ()) -> dict[str, Any]:
    """``--objective``/``--categorical``/``--ignore`` as the ``instrument_options`` of a table pool
    (``--instrument pool:FILE.csv``); refused for any other instrument, which measures its own."""
    from sdl.errors import InvalidInput
    from sdl.table_instrument import is_table_instrument

    given = {k: v for k, v in (("objective", objective), ("categorical", list(categorical)),
                               ("ignore_columns", list(ignore))) if v}
    if given and not is_table_instrument(instrument or ""):
        flag = {"ignore_columns": "ignore"}.get(next(iter(given)), next(iter(given)))
        raise InvalidInput(flag, f"--{flag} names a column of a table pool; give --instrument "
                           "pool:FILE.csv (other instruments measure their own objectives)", instrument)
    return given


# ------------------------------------------------------------------- campaign
@campaign_app.command("run")
def campaign_run(
    spec_file: Optional[Path] = typer.Option(None, "--spec", help="campaign spec as JSON"),
    instrument: Optional[str] = typer.Option(None, help="instrument name (overrides the spec)"),
    agent: Optional[str] = typer.Option(None, help="agent name (overrides the spec)"),
    budget: Optional[int] = typer.Option(None, help="number of experiments (overrides the spec)"),
    seed: Optional[int] = typer.Option(None, help="seed (overrides the spec)"),
    time_scale: Optional[float] = typer.Option(None, help="simulation time scale (overrides the spec)"),
    campaign_id: Optional[str] = typer.Option(None, "--id", help="id for the new campaign"),
    store_url: Optional[str] = typer.Option(None, "--store", help="SQLAlchemy URL (default $SDL_STORE_URL)"),
    objective: Optional[str] = typer.Option(None, "--objective", help="with --instrument pool:FILE.csv: the "
                                            "objective column, COLUMN[:min|max] (overrides the spec)"),
    categorical: list[str] = typer.Option([], "--categorical", help="with --instrument pool:FILE.csv: a numeric "
                                          "column to treat as categories (repeatable)"),
    ignore: list[str] = typer.Option([], "--ignore", help="with --instrument pool:FILE.csv: a column that is not "
                                     "an input (repeatable)"),
) -> None:
    """Create a campaign and run it to its budget or stopping rule."""
    quiet_libraries()
    from sdl.campaign import (
        build_instrument,
        check_campaign_id,
        check_local,
        check_runnable,
        create_campaign,
        validate_spec,
    )

    spec: dict[str, Any] = {}
    if spec_file is not None:
        try:
            spec = json.loads(spec_file.read_text())
        except (OSError, ValueError) as exc:  # ValueError: not JSON, not UTF-8
            fail(SdlError(f"--spec {spec_file}: cannot read JSON: {exc}"))
        if not isinstance(spec, dict):
            fail(SdlError(f"--spec {spec_file}: a campaign spec is a JSON object {{\"instrument\": ..., "
                           f"\"agent\": ...}}, not a {type(spec).__name__}"))
    overrides = {"instrument": instrument, "agent": agent, "budget": budget, "seed": seed, "time_scale": time_scale}
    spec.update({k: v for k, v in overrides.items() if v is not None})
    try:
        table = table_options(spec.get("instrument") if isinstance(spec.get("instrument"), str) else None,
                              objective, categorical, ignore)
        if table:
            spec["instrument_options"] = {**(spec.get("instrument_options") or {}), **table}  # built once: checked before the store is opened (nothing is written for a refused spec), then run on
        checked = validate_spec(spec)
        check_local(checked)
        if campaign_id is not None:
            check_campaign_id(campaign_id)
        instrument = build_instrument(checked)
        check_runnable(checked, instrument)
    except SdlError as exc:
        fail(exc)
    store = open_store(store_url)
    try:
        cid = create_campaign(store, checked, campaign_id)
    except SdlError as exc:
        fail(exc)
    console.print(f"campaign [bold]{cid}[/]")
    status = run_campaign(store, cid, "campaign", instrument)
    raise typer.Exit(0 if status == "completed" else 130 if status == "interrupted" else 1)


@campaign_app.command("resume")
def campaign_resume(
    campaign_id: str = typer.Argument(..., help="the campaign to continue (id or a unique prefix)"),
    store_url: Optional[str] = typer.Option(None, "--store", help="SQLAlchemy URL (default $SDL_STORE_URL)"),
) -> None:
    """Continue an interrupted campaign: nothing lost, no finished experiment repeated."""
    quiet_libraries()
    store = open_store(store_url)
    try:
        campaign_id = tables.campaign_id(store, campaign_id)  # a unique prefix will do
        store.campaign(campaign_id)
    except SdlError as exc:
        fail(exc)
    status = run_campaign(store, campaign_id, "resumed")
    raise typer.Exit(0 if status == "completed" else 130 if status == "interrupted" else 1)


@campaign_app.command("list")
def campaign_list(store_url: Optional[str] = typer.Option(None, "--store"),
                  as_json: bool = typer.Option(False, "--json", help="print the rows as JSON")) -> None:
    """List stored campaigns (ids whole; any unique prefix of one names it)."""
    store = open_store(store_url)
    rows = [{"id": row.id, "name": row.name, "instrument": row.spec.get("instrument", ""),
             "agent": row.spec.get("agent", ""), "status": row.status,
             "experiments": len(store.observations(row.id)), "budget": row.spec.get("budget")}
            for row in store.campaigns()]
    for r in rows if not as_json else ():
        r["done"] = f"{r['experiments']}/{r['budget']}"
    tables.print_rows(console, tables.CAMPAIGN_COLUMNS, rows, as_json=as_json)


@campaign_app.command("show")
def campaign_show(
    campaign_id: str = typer.Argument(...),
    store_url: Optional[str] = typer.Option(None, "--store"),
) -> None:
    """Print a campaign's summary as JSON."""
    from sdl.report import summarize

    store = open_store(store_url)
    try:
        console.print_json(json.dumps(summarize(store, tables.campaign_id(store, campaign_id))))
    except SdlError as exc:
        fail(exc)


@campaign_app.command("replay")
def campaign_replay(
    campaign_id: str = typer.Argument(...),
    store_url: Optional[str] = typer.Option(None, "--store"),
) -> None:
    """Recompute every observation from its run's stored documents and compare."""
    from sdl.replay import replay

    store = open_store(store_url)
    try:
        rows = replay(store, tables.campaign_id(store, campaign_id))
    except SdlError as exc:
        fail(exc)
    mismatches = [r for r in rows if not r["match"]]
    console.print(f"{len(rows)} observations recomputed from documents; {len(mismatches)} mismatches")
    raise typer.Exit(1 if mismatches else 0)

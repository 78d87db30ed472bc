"""The ``sdl`` command line (typer). Long work shows a progress bar (rich)."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from sdl import tables
from sdl.errors import SdlError

def _after_command(*_: object, **__: object) -> None:
    """A command has finished and the process is about to exit: stop CA callback threads
    first (see stop_ca_callbacks). Only in the ``sdl`` process itself, not when a test
    runs the app in its own process (the test goes on using ophyd)."""
    import sys
    from pathlib import Path

    entry = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if entry is not None and (entry.name == "sdl" or entry.resolve() == Path(__file__).resolve()):
        from sdl.ca_env import stop_ca_callbacks

        stop_ca_callbacks()


app = typer.Typer(help="sdl: self-driving-lab orchestration.", no_args_is_help=True, add_completion=False,
                  result_callback=_after_command)
campaign_app = typer.Typer(help="Create, run, resume and inspect campaigns.", no_args_is_help=True)
app.add_typer(campaign_app, name="campaign")
console = Console()
err_console = Console(stderr=True)


def _quiet_libraries() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for name in ("ax", "botorch", "bluesky", "ophyd", "caproto", "matplotlib"):
        logging.getLogger(name).setLevel(logging.ERROR)
    import warnings

    warnings.filterwarnings("ignore")


def _fail(exc: Exception) -> None:
    err_console.print(f"[bold red]error[/]: {exc}")
    raise typer.Exit(2)


def _store(url: Optional[str]):
    from sdl.config import get_settings
    from sdl.store import Store

    try:
        return Store(url or get_settings().store_url)
    except SdlError as exc:  # not a database URL, a file that is not a database: said, not a traceback
        _fail(exc)


class _RichProgress:
    """Campaign progress drawn as a rich progress bar."""

    def __init__(self, progress: Progress, label: str, objective: str):
        self.p = progress
        self.label = label
        self.objective = objective
        self.task = None

    def started(self, total: int, done: int) -> None:
        self.task = self.p.add_task(self.label, total=total, completed=done, best="-")

    def experiment_done(self, done, total, observation, best) -> None:
        best_s = "-" if best is None else f"{best:.4g}"
        self.p.update(self.task, completed=done, best=best_s)


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("best {task.fields[best]}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


def _run_campaign(store, campaign_id: str, label: str, instrument: Any = None) -> str:
    from sdl.campaign import CampaignRunner

    try:
        runner = CampaignRunner(store, campaign_id, progress=None, instrument=instrument)
    except SdlError as exc:  # an instrument that cannot be built (a plug-in's error, a PV that does not connect)
        _fail(exc)
    with _progress() as progress:
        runner.progress = _RichProgress(progress, label, runner.objectives[0].name)
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


# ----------------------------------------------------------------------- demo
@app.command()
def demo(
    agent: str = typer.Option("bo", help="agent: bo (default), random, sobol"),
    budget: int = typer.Option(30, min=1, help="number of experiments"),
    seed: int = typer.Option(0, min=0, help="seed of the agent and the counting noise"),
    out: Path = typer.Option(Path("sdl-output"), help="folder for the plot, summary and store"),
    time_scale: float = typer.Option(0.0, min=0.0, help="0: instant simulation, 1: real time"),
    instrument: str = typer.Option("sim-xrd", help="an instrument name (sdl instruments list)"),
    epics: bool = typer.Option(False, "--epics", help="serve the simulated lab as soft IOCs and run through "
                               "Channel Access (127.0.0.1, a free port)"),
) -> None:
    """Run a whole autonomous campaign on the simulated lab; write a plot and a summary."""
    if epics:
        from sdl.epics_lab import use_loopback_ca

        ca_port = use_loopback_ca()  # before ophyd is imported: loopback, a port of our own
    _quiet_libraries()
    from sdl.campaign import create_campaign
    from sdl.instruments import make_instrument
    from sdl.report import convergence_plot, summarize, write_summary
    from sdl.store import Store, sqlite_url

    try:
        out.mkdir(parents=True, exist_ok=True)
        store = Store(sqlite_url(out / "demo.sqlite"))
        spec = {"name": f"demo {instrument} {agent} seed {seed}", "instrument": instrument, "agent": agent,
                "budget": budget, "seed": seed, "time_scale": time_scale}
        cid = create_campaign(store, spec)
    except SdlError as exc:
        _fail(exc)
    console.print(f"campaign [bold]{cid}[/] on [bold]{instrument}[/] with agent [bold]{agent}[/], "
                  f"{budget} experiments (store: {out / 'demo.sqlite'})")
    if epics and make_instrument(instrument, seed=seed).simulator is not None:  # a plug-in's own double
        status = _demo_plugin_over_ca(store, cid, instrument, agent, seed, ca_port)
    elif epics:
        from sdl.epics_lab import serve_sim_lab

        with serve_sim_lab(instrument, seed=seed, port=ca_port, time_scale=time_scale,
                           n_slots=max(24, budget + 1)) as ioc:
            console.print(f"soft IOCs serving {len(ioc.pvs)} PVs under {ioc.prefix} on 127.0.0.1:{ioc.port}; "
                          "every device is driven over Channel Access")
            status = _run_campaign(store, cid, f"{agent} on {instrument} (EPICS)", instrument=ioc.epics_instrument())
            import epics.ca

            epics.ca.finalize_libca()  # close our circuits before the IOCs go: no disconnect warnings
    else:
        status = _run_campaign(store, cid, f"{agent} on {instrument}")
    optimum = make_instrument(instrument).optimum
    summary = summarize(store, cid, optimum)
    write_summary(summary, out / "summary.json")
    obj = summary["objective"]["name"]
    obs = store.observations(cid)
    opt_value = None if optimum is None else optimum.get(obj, optimum.get("fom"))
    convergence_plot({agent: summary["best_trace"]}, out / "convergence.png", objective=obj, optimum=opt_value,
                     points=[o.values.get(obj) if o.ok else None for o in obs],
                     title=f"sdl demo: {agent} on {instrument} (seed {seed})")
    best = summary["best"]
    if best:
        console.print(f"best {obj} measured: [bold]{best['value']:.4g}[/] at "
                      + ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in best["params"].items()))
        if opt_value and best.get("truth") is not None:  # a percentage of a non-zero optimum
            console.print(f"noise-free value there: {best['truth']:.4g}; hidden optimum: {opt_value:.4g} "
                          f"([bold]{100 * best['truth'] / opt_value:.1f} %[/] of the optimum)")
    console.print(f"wrote {out / 'convergence.png'} and {out / 'summary.json'}")
    if status != "completed":
        raise typer.Exit(1)


def _demo_plugin_over_ca(store, cid: str, instrument: str, agent: str, seed: int, ca_port: int) -> str:
    """``sdl demo --epics`` for a plug-in with a simulated double: serve it, drive it over CA."""
    import os

    from sdl.instruments import make_instrument
    from sdl.sim_serve import serving

    prefix = f"SDLDEMO{os.getpid()}:"
    with serving(instrument, prefix, port=ca_port, seed=seed) as group:
        console.print(f"{instrument}'s double serving {len(group.pvdb)} PVs under {prefix} on 127.0.0.1:{ca_port}; "
                      "every device is driven over Channel Access")
        try:
            inst = make_instrument(instrument, seed=seed, options={"epics_prefix": prefix})
        except SdlError as exc:
            _fail(exc)
        status = _run_campaign(store, cid, f"{agent} on {instrument} (EPICS)", instrument=inst)
        import epics.ca

        epics.ca.finalize_libca()
    return status


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
) -> None:
    """Create a campaign and run it to its budget or stopping rule."""
    _quiet_libraries()
    from sdl.campaign import build_instrument, check_campaign_id, check_runnable, create_campaign, validate_spec

    spec: dict[str, Any] = {}
    if spec_file is not None:
        try:
            spec = json.loads(spec_file.read_text())
        except (OSError, ValueError) as exc:  # ValueError: not JSON, not UTF-8
            _fail(SdlError(f"--spec {spec_file}: cannot read JSON: {exc}"))
        if not isinstance(spec, dict):
            _fail(SdlError(f"--spec {spec_file}: a campaign spec is a JSON object {{\"instrument\": ..., "
                           f"\"agent\": ...}}, not a {type(spec).__name__}"))
    overrides = {"instrument": instrument, "agent": agent, "budget": budget, "seed": seed, "time_scale": time_scale}
    spec.update({k: v for k, v in overrides.items() if v is not None})
    try:  # built once: checked before the store is opened (nothing is written for a refused spec), then run on
        checked = validate_spec(spec)
        if campaign_id is not None:
            check_campaign_id(campaign_id)
        instrument = build_instrument(checked)
        check_runnable(checked, instrument)
    except SdlError as exc:
        _fail(exc)
    store = _store(store_url)
    try:
        cid = create_campaign(store, checked, campaign_id)
    except SdlError as exc:
        _fail(exc)
    console.print(f"campaign [bold]{cid}[/]")
    status = _run_campaign(store, cid, "campaign", instrument)
    raise typer.Exit(0 if status == "completed" else 130 if status == "interrupted" else 1)


@campaign_app.command("resume")
def campaign_resume(
    campaign_id: str = typer.Argument(..., help="the campaign to continue (id or a unique prefix)"),
    store_url: Optional[str] = typer.Option(None, "--store", help="SQLAlchemy URL (default $SDL_STORE_URL)"),
) -> None:
    """Continue an interrupted campaign: nothing lost, no finished experiment repeated."""
    _quiet_libraries()
    store = _store(store_url)
    try:
        campaign_id = tables.campaign_id(store, campaign_id)  # a unique prefix will do
        store.campaign(campaign_id)
    except SdlError as exc:
        _fail(exc)
    status = _run_campaign(store, campaign_id, "resumed")
    raise typer.Exit(0 if status == "completed" else 130 if status == "interrupted" else 1)


@campaign_app.command("list")
def campaign_list(store_url: Optional[str] = typer.Option(None, "--store"),
                  as_json: bool = typer.Option(False, "--json", help="print the rows as JSON")) -> None:
    """List stored campaigns (ids whole; any unique prefix of one names it)."""
    store = _store(store_url)
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

    store = _store(store_url)
    try:
        console.print_json(json.dumps(summarize(store, tables.campaign_id(store, campaign_id))))
    except SdlError as exc:
        _fail(exc)


@campaign_app.command("replay")
def campaign_replay(
    campaign_id: str = typer.Argument(...),
    store_url: Optional[str] = typer.Option(None, "--store"),
) -> None:
    """Recompute every observation from its run's stored documents and compare."""
    from sdl.replay import replay

    store = _store(store_url)
    try:
        rows = replay(store, tables.campaign_id(store, campaign_id))
    except SdlError as exc:
        _fail(exc)
    mismatches = [r for r in rows if not r["match"]]
    console.print(f"{len(rows)} observations recomputed from documents; {len(mismatches)} mismatches")
    raise typer.Exit(1 if mismatches else 0)


# ------------------------------------------------------------------------ ioc
@app.command()
def ioc(
    names: Optional[list[str]] = typer.Argument(None, help="IOCs to serve (default all): stage_x, stage_y, "
                                                "mono_energy, shutter, ring, detector, changer, robot, temperature, "
                                                "sim, or groups motors, beamline, robots, all"),
    prefix: str = typer.Option("SDL:", help="PV prefix"),
    port: int = typer.Option(5064, min=1, max=65535, help="Channel Access server port"),
    instrument: str = typer.Option("sim-xrd", help="simulated instrument behind the PVs"),
    seed: int = typer.Option(0, min=0, help="seed of the simulated lab"),
    time_scale: float = typer.Option(1.0, min=0.0, help="1: real-time robots and motors, 0: instant"),
    list_only: bool = typer.Option(False, "--list", help="list the PVs and exit"),
    as_json: bool = typer.Option(False, "--json", help="with --list: print the PVs as JSON"),
    pva_port: Optional[int] = typer.Option(None, "--pva-port", min=1, max=65535,
                                           help="serve the same PVs over PVAccess too (UDP search port)"),
) -> None:
    """Serve the simulated lab as soft IOCs on 127.0.0.1 (Ctrl-C stops) and list their PVs."""
    from sdl.epics_lab import list_pvs, run_ioc, use_loopback_ca

    if _serve_plugin_double(instrument, prefix, port, seed, list_only, as_json):
        return
    try:
        pvs = list_pvs(names, prefix, instrument_name=instrument, seed=seed)
    except SdlError as exc:
        _fail(exc)
    if not (as_json and list_only):
        shown = [{**pv, "type": f"{pv['type']}[{pv['count']}]" if pv.get("count", 1) > 1 else pv["type"]}
                 for pv in pvs]
        tables.print_rows(console, tables.PV_COLUMNS, shown)
    else:
        tables.print_rows(console, tables.PV_COLUMNS, pvs, as_json=True)
    if list_only:
        return
    use_loopback_ca(port)
    console.print(f"serving {len(pvs)} PVs on 127.0.0.1:{port} (Ctrl-C stops)")
    run_ioc(names, prefix, instrument_name=instrument, seed=seed, port=port, time_scale=time_scale, pva_port=pva_port)


def _serve_plugin_double(instrument: str, prefix: str, port: int, seed: int, list_only: bool,
                         as_json: bool = False) -> bool:
    """A plug-in instrument with a simulated double of its own: list or serve it (True if it has one)."""
    from sdl.instruments import make_instrument

    try:
        inst = make_instrument(instrument, seed=seed)
    except SdlError as exc:
        _fail(exc)
    if inst.simulator is None:
        return False
    from sdl.epics_lab import use_loopback_ca
    from sdl.sim_serve import run_simulator, simulator_group

    group = simulator_group(instrument, prefix, seed=seed)
    rows = [{"name": name, "ioc": instrument,
             "type": f"{pv.data_type.name.lower()}[{pv.max_length}]" if pv.max_length > 1 else
             pv.data_type.name.lower(), "access": "ro" if pv.pvspec.read_only else "rw", "units": "",
             "doc": (pv.pvspec.doc or "").strip()} for name, pv in group.pvdb.items()]
    tables.print_rows(console, tables.PV_COLUMNS, rows, as_json=as_json and list_only)
    if not list_only:
        use_loopback_ca(port)
        console.print(f"serving {len(group.pvdb)} PVs of {instrument} on 127.0.0.1:{port} (Ctrl-C stops)")
        run_simulator(instrument, prefix, port=port, seed=seed)
    return True


# ---------------------------------------------------------------------- bench
@app.command()
def bench(
    agents: str = typer.Option("bo,gp-ei,random", help="comma-separated agents (random is the baseline for EF/AF)"),
    problems: str = typer.Option("", help="comma-separated: p3ht, agnp (real-data pools), the Olympus pools "
                                          "(sdl.pools.OLYMPUS), sim-xrd, branin, hartmann6 (default p3ht when "
                                          "no --pool or --suite)"),
    seeds: int = typer.Option(10, min=1, help="number of seeds (first-seed .. first-seed + seeds - 1)"),
    first_seed: int = typer.Option(0, min=0, help="first seed"),
    budget: int = typer.Option(50, min=6, help="experiments per campaign"),
    n_start: int = typer.Option(5, min=1, help="random starting points (the same for every agent)"),
    batch_size: int = typer.Option(1, min=1, help="points per ask (a batch for parallel instruments)"),
    workers: int = typer.Option(0, min=0, help="processes (0: one per core)"),
    quick: bool = typer.Option(False, "--quick", help="CI size: 2 seeds, pools to 30 experiments, functions to 20"),
    out: Path = typer.Option(Path("sdl-bench"), help="folder for bench.json and the plot"),
    pool: list[Path] = typer.Option([], "--pool", help="a CSV table as a pool (repeatable); needs --objective"),
    objective: list[str] = typer.Option([], "--objective", help="COLUMN[:min|max] of every --pool (repeatable: "
                                                                 "several objectives)"),
    categorical: list[str] = typer.Option([], "--categorical", help="a numeric column of --pool to treat as "
                                                                     "categories (repeatable)"),
    suite: bool = typer.Option(False, "--suite", help="every bundled pool: 12 Olympus + P3HT + AgNP"),
    resume: bool = typer.Option(False, "--resume", help="keep the campaigns OUT/runs.jsonl already holds"),
) -> None:
    """Benchmark agents: top-5 % found on the pools (Liang et al. 2021 metrics: enhancement
    and acceleration against random), best found / regret on the functions; a table and a PNG.
    Several problems: mean rank and wins/ties/losses of each agent (Wilcoxon over seeds)."""
    _quiet_libraries()
    from sdl.bench import bench_command

    agent_list = [a.strip() for a in agents.split(",") if a.strip()]
    problem_list = [p.strip() for p in problems.split(",") if p.strip()]
    seed_list = list(range(first_seed, first_seed + seeds))
    if problems.strip() and not problem_list:  # "," is not "nothing said" (which means p3ht)
        _fail(SdlError(f"--problems: name at least one problem, comma-separated (got {problems!r})"))
    try:
        from sdl.bench import table_pools

        pools = table_pools(pool, objective, categorical)
        bench_command(agent_list, problem_list, seed_list, budget=budget, n_start=n_start, workers=workers or None,
                      quick=quick, batch_size=batch_size, out=out, console=console, progress=_progress(),
                      pools=pools, suite=suite, resume=resume)
    except SdlError as exc:
        _fail(exc)


# ------------------------------------------------------- HTTP service commands
def _register_service_commands() -> None:
    from sdl.service_cli import register

    register(app, campaign_app)  # sdl serve, sdl submit, sdl campaign create|watch


_register_service_commands()


# ------------------------------------------------- the store's schema: sdl db
def _register_db_commands() -> None:
    from sdl.db_cli import db_app

    app.add_typer(db_app, name="db")  # sdl db upgrade | current | revision


_register_db_commands()
app.add_typer(__import__("sdl.workflows.cli").workflows.cli.workflow_app, name="workflow")  # sdl workflow ...


def _register_export_commands() -> None:
    from sdl.data_views.cli import export_app

    app.add_typer(export_app, name="export")  # sdl export nexus


_register_export_commands()


# ----------------------- sdl instruments list|show, and --profile on every command (keep this last)
__import__("sdl.instruments_cli").instruments_cli.register(app)


def main() -> None:  # pragma: no cover
    app(prog_name="sdl")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

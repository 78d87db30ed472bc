"""``sdl demo``, ``sdl ioc`` and ``sdl bench``: the simulated lab, its soft IOCs, the agents' benchmark."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from sdl import tables
from sdl.cli.apps import app
from sdl.cli.campaigns import run_campaign, table_options
from sdl.cli.output import console, fail, progress_bar, quiet_libraries
from sdl.errors import SdlError


# ----------------------------------------------------------------------- demo
@app.command()
def demo(
    agent: str = typer.Option("bo", help="agent: bo (default), ax, botorch, gp-ei, ax-default, random, sobol, grid, or a plug-in's"),
    budget: int = typer.Option(30, min=1, help="number of experiments"),
    seed: int = typer.Option(0, min=0, help="seed of the agent and the counting noise"),
    out: Path = typer.Option(Path("sdl-output"), help="folder for the plot, summary and store"),
    time_scale: float = typer.Option(0.0, min=0.0, help="0: instant simulation, 1: real time"),
    instrument: str = typer.Option("sim-xrd", help="an instrument name (sdl instruments list)"),
    epics: bool = typer.Option(False, "--epics", help="serve the simulated lab as soft IOCs and run through "
                               "Channel Access (127.0.0.1, a free port)"),
    objective: Optional[str] = typer.Option(None, "--objective", help="with --instrument pool:FILE.csv: the "
                                            "objective column, COLUMN[:min|max]"),
    categorical: list[str] = typer.Option([], "--categorical", help="with --instrument pool:FILE.csv: a numeric "
                                          "column to treat as categories (repeatable)"),
    ignore: list[str] = typer.Option([], "--ignore", help="with --instrument pool:FILE.csv: a column that is not "
                                     "an input (repeatable)"),
) -> None:
    """Run a whole autonomous campaign on the simulated lab; write a plot and a summary."""
    if epics:
        from sdl.epics_lab import use_loopback_ca

        ca_port = use_loopback_ca()  # before ophyd is imported: loopback, a port of our own
    quiet_libraries()
    from sdl.campaign import build_instrument, check_runnable, create_campaign, validate_spec
    from sdl.report import convergence_plot, summarize, write_summary
    from sdl.store import Store, sqlite_url

    try:  # everything a run would refuse is refused before the output folder and store are made
        spec = {"name": f"demo {instrument} {agent} seed {seed}", "instrument": instrument, "agent": agent,
                "budget": budget, "seed": seed, "time_scale": time_scale,
                "instrument_options": table_options(instrument, objective, categorical, ignore)}
        checked = validate_spec(spec)
        built = build_instrument(checked)
        check_runnable(checked, built)
        out.mkdir(parents=True, exist_ok=True)
        store = Store(sqlite_url(out / "demo.sqlite"))
        cid = create_campaign(store, checked)
    except SdlError as exc:
        fail(exc)
    console.print(f"campaign [bold]{cid}[/] on [bold]{instrument}[/] with agent [bold]{agent}[/], "
                  f"{budget} experiments (store: {out / 'demo.sqlite'})")
    if epics and built.simulator is not None:  # a plug-in's own double
        status = _demo_plugin_over_ca(store, cid, instrument, agent, seed, ca_port)
    elif epics:
        from sdl.epics_lab import serve_sim_lab

        with serve_sim_lab(instrument, seed=seed, port=ca_port, time_scale=time_scale,
                           n_slots=max(24, budget + 1)) as ioc:
            console.print(f"soft IOCs serving {len(ioc.pvs)} PVs under {ioc.prefix} on 127.0.0.1:{ioc.port}; "
                          "every device is driven over Channel Access")
            status = run_campaign(store, cid, f"{agent} on {instrument} (EPICS)", instrument=ioc.epics_instrument())
            import epics.ca

            epics.ca.finalize_libca()  # close our circuits before the IOCs go: no disconnect warnings
    else:
        status = run_campaign(store, cid, f"{agent} on {instrument}", instrument=built)
    optimum = built.optimum
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
            fail(exc)
        status = run_campaign(store, cid, f"{agent} on {instrument} (EPICS)", instrument=inst)
        import epics.ca

        epics.ca.finalize_libca()
    return status


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
        fail(exc)
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
        fail(exc)
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
    inputs: list[str] = typer.Option([], "--input", help="an input column of --pool (repeatable; default: every "
                                                          "column but the objectives and --ignore)"),
    ignore: list[str] = typer.Option([], "--ignore", help="a column of --pool that is not an input: a date, a "
                                                           "note, another measured value (repeatable)"),
    suite: bool = typer.Option(False, "--suite", help="every bundled pool: 12 Olympus + P3HT + AgNP"),
    resume: bool = typer.Option(False, "--resume", help="keep the campaigns OUT/runs.jsonl already holds"),
) -> None:
    """Benchmark agents: top-5 % found on the pools (Liang et al. 2021 metrics: enhancement
    and acceleration against random), best found / regret on the functions; a table and a PNG.
    Several problems: mean rank and wins/ties/losses of each agent (Wilcoxon over seeds)."""
    quiet_libraries()
    from sdl.bench import bench_command

    agent_list = [a.strip() for a in agents.split(",") if a.strip()]
    problem_list = [p.strip() for p in problems.split(",") if p.strip()]
    seed_list = list(range(first_seed, first_seed + seeds))
    if problems.strip() and not problem_list:  # "," is not "nothing said" (which means p3ht)
        fail(SdlError(f"--problems: name at least one problem, comma-separated (got {problems!r})"))
    try:
        from sdl.bench import table_pools

        pools = table_pools(pool, objective, categorical, inputs, ignore)
        bench_command(agent_list, problem_list, seed_list, budget=budget, n_start=n_start, workers=workers or None,
                      quick=quick, batch_size=batch_size, out=out, console=console, progress=progress_bar(),
                      pools=pools, suite=suite, resume=resume)
    except SdlError as exc:
        fail(exc)

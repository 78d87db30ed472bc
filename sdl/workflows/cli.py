"""``sdl workflow``: validate a workflow, run a workflow campaign, run a station's worker,
list workflows (their ids), show a workflow or a sample."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from sdl.cli.output import console, fail
from sdl.errors import InvalidInput, SdlError

workflow_app = typer.Typer(help="Workflows across instruments, with every sample tracked.", no_args_is_help=True)


def _store(url: Optional[str]):
    from sdl.config import get_settings
    from sdl.workflows.worker import open_store

    return open_store(url or get_settings().store_url)


def _existing_store(url: Optional[str]):
    """The store for a command that only reads: a SQLite file that is not there is said, not
    created empty (then every id would be "no such ...")."""
    from sdl.config import get_settings
    from sdl.database import parse_store_url, redact

    target = url or get_settings().store_url
    option = "--store" if url else "--store (default: SDL_STORE_URL)"
    try:
        u = parse_store_url(target)
    except SdlError as exc:
        fail(exc)
    if u.get_backend_name() == "sqlite" and u.database not in (None, "", ":memory:") \
            and u.query.get("mode") != "memory" and not Path(u.database).expanduser().exists():
        fail(InvalidInput(option, "no store there (no such SQLite file); give the --store that "
                                  "`sdl workflow run` used", redact(target)))
    try:
        return _store(target)
    except SdlError as exc:
        fail(exc)


def _workflow_rows(engine, rows: list, limit: int) -> list[dict]:
    """The newest ``limit`` of ``rows`` (WorkflowRow, oldest first), newest first, each with
    its sample(s) (from its tasks) and its reduced values."""
    out = []
    for r in reversed(rows[-limit:]):
        samples = list(dict.fromkeys(t["sample_id"] for t in engine.workflow(r.id)["tasks"] if t["sample_id"]))
        values = (r.result or {}).get("values") or {}
        out.append({"id": r.id, "campaign_id": r.campaign_id, "sample_id": ", ".join(samples), "status": r.status,
                    "values": values, "result": " ".join(f"{k}={v:.4g}" if isinstance(v, (int, float)) else
                                                         f"{k}={v}" for k, v in values.items()),
                    "created": f"{r.created_at:%Y-%m-%d %H:%M:%S}" if r.created_at else "",
                    "finished": f"{r.finished_at:%Y-%m-%d %H:%M:%S}" if r.finished_at else "",
                    "message": r.message})
    return out


def _store_opt(url: Optional[str]) -> str:
    from sdl.database import redact

    return f" --store {redact(url)}" if url else ""


def _load(path: Path) -> dict:
    """A spec file as a dict; anything else (unreadable, not UTF-8, not JSON, not an object)
    is said as an error naming the file, never a traceback from deeper down."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        fail(InvalidInput(str(path), "not UTF-8 text; a workflow (campaign) spec is a JSON object"))
    except (OSError, json.JSONDecodeError) as exc:
        fail(InvalidInput(str(path), f"cannot read JSON: {exc}"))
    if not isinstance(data, dict):
        fail(InvalidInput(str(path), f"a workflow (campaign) spec is a JSON object {{\"tasks\": ...}} or "
                                      f"{{\"workflow\": ...}}, not {type(data).__name__}"))
    return data


def _positive(option: str, value: float) -> None:
    """A lease or timeout of 0 or less would lose every task or stop at once: refuse it."""
    if not value > 0:  # also NaN
        fail(InvalidInput(option, "must be a number of seconds above 0", value))


WORKERS = ("threads", "processes", "none")


@workflow_app.command("validate")
def validate(path: Path = typer.Argument(..., help="a workflow (JSON) or a workflow campaign spec (JSON)")) -> None:
    """Check a workflow or a workflow campaign spec; say what is wrong, naming the task and field."""
    from sdl.workflows.campaign import validate_campaign
    from sdl.workflows.graph import topological, validate_workflow

    data = _load(path)
    try:
        spec = validate_campaign(data).spec if "workflow" in data else validate_workflow(data)
    except SdlError as exc:
        fail(exc)
    console.print(f"ok: tasks in order {topological(spec)}; instruments {spec.instruments}")


@workflow_app.command("run")
def run(
    spec: Optional[Path] = typer.Argument(None, help="a workflow campaign spec (JSON); default: the three-station "
                                          "example"),
    store: Optional[str] = typer.Option(None, "--store", help="store URL (default: SDL_STORE_URL)"),
    budget: Optional[int] = typer.Option(None, help="override the spec's budget"),
    workers: str = typer.Option("processes", help="threads | processes | none (workers run elsewhere)"),
    lease: float = typer.Option(10.0, help="lease of a task and its locks (s)"),
    resume: Optional[str] = typer.Option(None, help="resume this campaign id instead of creating one"),
    timeout: float = typer.Option(3600.0, help="give up after this many seconds"),
) -> None:
    """Run a workflow campaign to its budget (make -> measurements -> reduction per step)."""
    from sdl.workflows.campaign import WorkflowCampaignRunner, create_workflow_campaign
    from sdl.workflows.stations import three_station_workflow

    # options first: nothing is created for a run that could not go on
    if workers not in WORKERS:
        fail(InvalidInput("--workers", f"allowed: {', '.join(WORKERS)}", workers))
    _positive("--lease", lease)
    _positive("--timeout", timeout)
    data = _load(spec) if spec else {"name": "three-station example", "workflow": three_station_workflow(),
                                     "time_scale": 0.0}
    if budget is not None:
        data["budget"] = budget
    st = _store(store)
    try:
        from sdl import tables
        from sdl.service.dispatch import retry

        # a unique prefix of an id will do, as `sdl campaign list` shows them
        cid = tables.campaign_id(st, resume) if resume is not None else create_workflow_campaign(st, data)
        runner = retry(lambda: WorkflowCampaignRunner(st, cid, lease_s=lease), what="open the campaign")
        # a runner killed a moment ago is waited out (its lease); a live one is an error
        runner.standby_s = 3 * lease + 5
        console.print(f"campaign {cid}: {runner.cspec.budget} workflows, stations {runner.cspec.spec.instruments}, "
                      f"workers: {workers}")
        status = runner.run(workers, timeout=timeout, store_url=st.url)
    except SdlError as exc:
        fail(exc)
    obs = retry(lambda: st.observations(cid), what="read the observations")
    ok = [o for o in obs if o.ok]
    o = runner.objectives[0]
    best = max((x.values[o.name] for x in ok), default=None) if o.direction == "maximize" else \
        min((x.values[o.name] for x in ok), default=None)
    console.print(f"{status}: {len(obs)} workflows ({len(ok)} ok), best {o.name} = {best}")
    _summary_table(st, cid, store, o.name)
    print(json.dumps({"campaign_id": cid, "status": status, "workflows": len(obs), "ok": len(ok),
                      "best": best}), flush=True)  # one line, for scripts
    # as sdl campaign run: a script sees a campaign that did not finish (its --timeout, Ctrl-C)
    raise typer.Exit(0 if status == "completed" else 130 if status == "interrupted" else 1)


def _look_at_one(row: dict, opt: str) -> None:
    """How to look at a listed workflow and its sample (the newest, as an example)."""
    console.print(f"look at one: sdl workflow show {row['id']}{opt}", markup=False, highlight=False, soft_wrap=True)
    if row["sample_id"]:
        console.print(f"its sample:  sdl workflow sample {row['sample_id'].split(', ')[0]}{opt}", markup=False,
                      highlight=False, soft_wrap=True)


def _summary_table(st, cid: str, store: Optional[str], objective: str, last: int = 10) -> None:
    """The campaign's workflows (the last ``last``): their ids, samples, states and values,
    and how to see more, so that ``sdl workflow show`` / ``sample`` have ids to take."""
    from sdl import tables
    from sdl.service.dispatch import retry
    from sdl.workflows.engine import Engine

    eng = Engine(st)
    rows = retry(lambda: eng.workflows(cid), what="read the workflows")
    shown = retry(lambda: _workflow_rows(eng, rows, last), what="read the workflows")
    for r in shown:
        v = r["values"].get(objective)
        r[objective] = f"{v:.4g}" if isinstance(v, (int, float)) else ""
    cols = (tables.Col("id", "workflow", whole=True), tables.Col("sample_id", "sample", whole=True),
            tables.Col("status", whole=True), tables.Col(objective, whole=True))
    more = len(rows) - len(shown)
    title = f"workflows of campaign {cid}" + (f" (the last {len(shown)} of {len(rows)})" if more else "")
    tables.print_rows(console, cols, shown, title=title)
    opt = _store_opt(store)
    if more:
        console.print(f"{more} more: sdl workflow list --campaign {cid} --limit {len(rows)}{opt}",
                      markup=False, highlight=False, soft_wrap=True)
    if shown:
        _look_at_one(shown[0], opt)


@workflow_app.command("worker")
def worker(
    instrument: str = typer.Argument(..., help="the station (a registered instrument)"),
    store: Optional[str] = typer.Option(None, "--store"),
    lease: float = typer.Option(10.0, help="lease (s)"),
    seed: int = typer.Option(0),
    time_scale: float = typer.Option(0.0, "--time-scale"),
    options: str = typer.Option("{}", help="instrument options (JSON)"),
    max_tasks: Optional[int] = typer.Option(None, help="stop after this many tasks"),
) -> None:
    """Run one station's task worker against the store until stopped."""
    from sdl.config import get_settings
    from sdl.workflows.worker import serve_worker

    _positive("--lease", lease)
    try:
        opts = json.loads(options)
    except ValueError as exc:
        fail(InvalidInput("--options", f"not JSON ({exc}); give a JSON object of instrument options, "
                                        "e.g. '{}'", options))
    if not isinstance(opts, dict):
        fail(InvalidInput("--options", "a JSON object of instrument options, e.g. '{}'", options))
    try:
        serve_worker(store or get_settings().store_url, instrument, lease_s=lease, seed=seed,
                     time_scale=time_scale, options=opts, max_tasks=max_tasks)
    except SdlError as exc:
        fail(exc)


@workflow_app.command("list")
def list_workflows(
    campaign: Optional[str] = typer.Option(None, "--campaign", help="only this workflow campaign's (id or a "
                                           "unique prefix)"),
    store: Optional[str] = typer.Option(None, "--store", help="store URL (default: SDL_STORE_URL)"),
    limit: int = typer.Option(20, "--limit", help="show the newest this many"),
    as_json: bool = typer.Option(False, "--json", help="print the rows as JSON"),
) -> None:
    """List workflows, newest first: their ids and samples (for show / sample), state, values."""
    from sdl import tables
    from sdl.workflows.engine import Engine

    if limit < 1:
        fail(InvalidInput("--limit", "a number of workflows, 1 or more", limit))
    st = _existing_store(store)
    try:
        cid = None
        if campaign is not None:  # only workflow campaigns: a plain campaign has no workflows
            cid = tables.resolve_prefix(campaign, [r.id for r in st.campaigns() if (r.spec or {}).get("kind")
                                                   == "workflow"], field="--campaign", what="workflow campaign")
        eng = Engine(st)
        rows = eng.workflows(cid)
        shown = _workflow_rows(eng, rows, limit)
    except SdlError as exc:
        fail(exc)
    if as_json:
        tables.print_rows(console, (), [{k: v for k, v in r.items() if k != "result"} for r in shown],
                          as_json=True)
        return
    cols = ((tables.Col("id", "workflow", whole=True),)
            + (() if cid else (tables.Col("campaign_id", "campaign", whole=True),))
            + (tables.Col("sample_id", "sample", whole=True), tables.Col("status", whole=True),
               tables.Col("result"), tables.Col("created", "created (UTC)", whole=True),
               tables.Col("finished", "finished (UTC)", whole=True)))
    where = f"campaign {cid}" if cid else "all campaigns"
    if not rows:
        console.print(f"no workflows ({where})", markup=False, highlight=False, soft_wrap=True)
        return
    tables.print_rows(console, cols, shown, title=f"workflows of {where}, newest first: {len(shown)} of {len(rows)}")
    opt = _store_opt(store)
    if len(rows) > len(shown):
        console.print(f"{len(rows) - len(shown)} older not shown: --limit {len(rows)}", markup=False,
                      highlight=False, soft_wrap=True)
    _look_at_one(shown[0], opt)


@workflow_app.command("show")
def show(workflow_id: str = typer.Argument(..., help="a workflow id, as `sdl workflow list` shows"),
         store: Optional[str] = typer.Option(None, "--store")) -> None:
    """A workflow's task graph with each task's state, as JSON."""
    from sdl.workflows.engine import Engine

    try:
        console.print_json(json.dumps(Engine(_existing_store(store)).workflow(workflow_id), default=str))
    except SdlError as exc:
        fail(exc)


@workflow_app.command("sample")
def sample(sample_id: str = typer.Argument(..., help="a sample id, as `sdl workflow list` shows"),
           store: Optional[str] = typer.Option(None, "--store")) -> None:
    """A sample: what made it, where it is, its state and its full history, as JSON."""
    from sdl.workflows.engine import Engine

    try:
        console.print_json(json.dumps(Engine(_existing_store(store)).sample(sample_id), default=str))
    except SdlError as exc:
        fail(exc)


if __name__ == "__main__":  # python -m sdl.workflows.cli (how the runner spawns workers)
    workflow_app()

"""``sdl workflow``: validate a workflow, run a workflow campaign, run a station's worker,
show a workflow or a sample."""

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
    print(json.dumps({"campaign_id": cid, "status": status, "workflows": len(obs), "ok": len(ok),
                      "best": best}), flush=True)  # one line, for scripts
    # as sdl campaign run: a script sees a campaign that did not finish (its --timeout, Ctrl-C)
    raise typer.Exit(0 if status == "completed" else 130 if status == "interrupted" else 1)


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


@workflow_app.command("show")
def show(workflow_id: str, store: Optional[str] = typer.Option(None, "--store")) -> None:
    """A workflow's task graph with each task's state, as JSON."""
    from sdl.workflows.engine import Engine

    try:
        console.print_json(json.dumps(Engine(_store(store)).workflow(workflow_id), default=str))
    except SdlError as exc:
        fail(exc)


@workflow_app.command("sample")
def sample(sample_id: str, store: Optional[str] = typer.Option(None, "--store")) -> None:
    """A sample: what made it, where it is, its state and its full history, as JSON."""
    from sdl.workflows.engine import Engine

    try:
        console.print_json(json.dumps(Engine(_store(store)).sample(sample_id), default=str))
    except SdlError as exc:
        fail(exc)


if __name__ == "__main__":  # python -m sdl.workflows.cli (how the runner spawns workers)
    workflow_app()

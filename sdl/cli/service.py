"""CLI commands of the HTTP service: ``sdl serve``, ``sdl submit``, ``sdl campaign create``,
``sdl campaign watch``. Plain typer command functions; ``register(app, campaign_app)``
adds them to the ``sdl`` CLI.

The client commands talk to a running service: ``--url`` (default ``$SDL_URL`` or
http://127.0.0.1:8000) and ``--token`` (default ``$SDL_TOKEN``).
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any, Optional

import typer

from sdl.cli.output import console, err_console, fail


_URL = typer.Option(None, "--url", help="service URL (default $SDL_URL or http://127.0.0.1:8000)")
_TOKEN = typer.Option(None, "--token", help="API token (default $SDL_TOKEN)")


def _client(url: Optional[str], token: Optional[str]):
    from sdl.client import Client

    tok = token if token is not None else os.environ.get("SDL_TOKEN")
    if not tok:
        fail("no token: pass --token or set SDL_TOKEN (an admin creates accounts and tokens)")
    return Client(url, tok)


def _call(fn, *args: Any, **kwargs: Any) -> Any:
    import httpx

    from sdl.client import ServiceError

    try:
        return fn(*args, **kwargs)
    except ServiceError as exc:
        named = not exc.field or exc.message.startswith(f"{exc.field}:")  # the service's message names it already
        fail(f"{exc.message}" + ("" if named else f" [field: {exc.field}]") + f" (HTTP {exc.status})")
    except httpx.HTTPError as exc:
        fail(f"cannot reach the service: {exc}")


def _resolve_campaign(c: Any, prefix: str) -> str:
    """The full id of the campaign a unique prefix names (among those this token sees)."""
    from sdl.errors import SdlError
    from sdl.tables import resolve_with

    try:
        return resolve_with(lambda: _call(c.campaigns), prefix)
    except SdlError as exc:
        fail(exc)


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


# ------------------------------------------------------------------------ serve
def serve(
    host: Optional[str] = typer.Option(None, help="address to listen on (default $SDL_HOST or 127.0.0.1)"),
    port: Optional[int] = typer.Option(None, min=0, max=65535, help="port (default $SDL_PORT or 8000)"),
    store: Optional[str] = typer.Option(None, "--store", help="SQLAlchemy URL (default $SDL_STORE_URL)"),
    config: Optional[Path] = typer.Option(None, "--config", help="settings file (JSON or TOML; default $SDL_CONFIG)"),
    instruments: Optional[str] = typer.Option(None, help="comma-separated instruments (default: all simulated)"),
    time_scale: Optional[float] = typer.Option(None, min=0.0, help="0: instant simulation, 1: real time"),
    no_workers: bool = typer.Option(False, "--no-workers", help="every instrument is served by `sdl worker` "
                                    "processes: this service only schedules and observes"),
    log_level: str = typer.Option("info", help="uvicorn log level"),
    tiled: bool = typer.Option(False, "--tiled", help="also start an embedded Tiled server and feed every run "
                               "to it (needs pip install 'sdl\\[tiled]'; docs/data.md)"),
    tiled_url: Optional[str] = typer.Option(None, "--tiled-url", help="feed every run to this existing Tiled "
                                            "server (API key: $SDL_TILED_API_KEY)"),
) -> None:
    """Run the cloud-lab service: HTTP API, live stream, web page, scheduler and one worker per instrument."""
    import logging
    import warnings

    from sdl.errors import SdlError
    from sdl.service.server import serve_forever
    from sdl.service.settings import load_settings

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for name in ("ax", "botorch", "bluesky", "ophyd", "caproto", "matplotlib"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    try:
        settings = load_settings(config, host=host, port=port, store_url=store, instruments=instruments,
                                 time_scale=time_scale, external_workers=True if no_workers else None,
                                 tiled=True if tiled else None, tiled_url=tiled_url)
    except SdlError as exc:
        fail(exc)
    if settings.tiled and not settings.tiled_port:  # chosen now, so that it can be printed below
        from sdl.data_views.tiled_server import free_port

        settings.tiled_port = free_port(settings.tiled_host)

    def ready(app) -> None:
        token = app.state.initial_admin_token
        url = f"http://{settings.host}:{settings.port}"
        console.print(f"sdl service on [bold]{url}[/] (web page {url}/, API {url}/docs), store {settings.store_url}")
        console.print("instruments: " + ", ".join(
            f"{c.name} (dedicated {c.dedicated_fraction:.0%}"
            f"{', served by sdl worker' if settings.is_external(c) else ''})" for c in settings.instruments))
        if settings.tiled or settings.tiled_url:
            where = f"http://{settings.tiled_host}:{settings.tiled_port}" if settings.tiled else settings.tiled_url
            console.print(f"Tiled: every run is fed to [bold]{where}[/]"
                          + (" (log in with your sdl user name and an sdl token)" if settings.tiled else ""))
        if token:
            console.print(f"[bold yellow]first start[/]: created the admin account "
                          f"[bold]{settings.admin_name}[/]. Its token, shown only now (keep it):")
            console.print(f"  [bold]{token}[/]", soft_wrap=True)
            console.print(f"  export SDL_URL={url} SDL_TOKEN={token}", soft_wrap=True)

    try:
        serve_forever(settings, on_ready=ready, log_level=log_level)
    except SdlError as exc:
        fail(exc)


# ----------------------------------------------------------------------- worker
def worker(
    instrument: str = typer.Option(..., "--instrument", help="instrument name, e.g. sim-xrd"),
    store: Optional[str] = typer.Option(None, "--store", help="SQLAlchemy URL of the shared store "
                                        "(default $SDL_STORE_URL)"),
    config: Optional[Path] = typer.Option(None, "--config", help="settings file (JSON or TOML; default $SDL_CONFIG)"),
    worker_id: Optional[str] = typer.Option(None, "--worker-id", help="default HOST:PID:INSTRUMENT"),
    time_scale: Optional[float] = typer.Option(None, min=0.0, help="simulation speed of this instrument"),
) -> None:
    """Run one instrument's RunEngine in this process against the shared store (no HTTP):
    lease queue items, stream documents to the store, recover expired leases. An instrument
    with "backend": "queueserver" in the settings file runs its plans on that RE Manager."""
    from sdl.errors import SdlError
    from sdl.service.worker_process import run

    def ready(proc) -> None:
        qs = proc.cfg.queueserver
        runs_on = f", plans run on the RE Manager at {qs.control_addr}" if qs is not None else ""
        err_console.print(f"sdl worker {proc.worker.worker_id}: instrument {instrument}, store "
                          f"{proc.settings.store_url}, lease {proc.settings.lease_timeout_s:g} s{runs_on}")

    try:
        run(instrument, store, str(config) if config else None, worker_id, time_scale, on_ready=ready)
    except SdlError as exc:
        fail(exc)


# ----------------------------------------------------------------------- submit
def submit(
    instrument: str = typer.Argument(..., help="instrument name, e.g. sim-xrd"),
    param: list[str] = typer.Option([], "--param", "-p", help="NAME=VALUE (repeat), e.g. -p temperature=420"),
    proposal: str = typer.Option(..., "--proposal", help="proposal id"),
    plan: Optional[str] = typer.Option(None, help="plan name (default: the instrument's default plan; "
                                       "GET /api/instruments/NAME lists them)"),
    priority: int = typer.Option(0, min=-10, max=10, help="order within the proposal's queue"),
    note: str = typer.Option("", help="free text kept with the experiment"),
    wait: bool = typer.Option(False, "--wait", help="wait until it has run and print the result"),
    url: Optional[str] = _URL,
    token: Optional[str] = _TOKEN,
) -> None:
    """Submit one experiment to the service's queue (validated at once: bad values name the field)."""
    params: dict[str, Any] = {}
    for p in param:
        if "=" not in p:
            fail(f"--param {p!r}: write NAME=VALUE")
        k, v = p.split("=", 1)
        params[k.strip()] = _parse_value(v.strip())
    c = _client(url, token)
    item = _call(c.submit, proposal, instrument, params, plan=plan, priority=priority, note=note)
    if wait:
        item = _call(c.wait, item["id"])
    console.print_json(json.dumps(item))
    if wait and item["status"] != "done":
        raise typer.Exit(1)


# --------------------------------------------------------------------- campaign
def campaign_create(
    spec_file: Optional[Path] = typer.Option(None, "--spec", help="campaign spec as JSON"),
    proposal: str = typer.Option(..., "--proposal", help="proposal id"),
    instrument: Optional[str] = typer.Option(None, help="instrument (overrides the spec)"),
    agent: Optional[str] = typer.Option(None, help="agent (overrides the spec)"),
    budget: Optional[int] = typer.Option(None, min=1, help="number of experiments (overrides the spec)"),
    seed: Optional[int] = typer.Option(None, min=0, help="seed (overrides the spec)"),
    priority: int = typer.Option(0, min=-10, max=10, help="order within the proposal's queue"),
    start: bool = typer.Option(True, "--start/--no-start", help="start it at once"),
    url: Optional[str] = _URL,
    token: Optional[str] = _TOKEN,
) -> None:
    """Create (and start) a campaign on the service; prints its id."""
    spec: dict[str, Any] = {}
    if spec_file is not None:
        try:
            spec = json.loads(spec_file.read_text())
        except (OSError, ValueError) as exc:
            fail(f"--spec {spec_file}: cannot read JSON: {exc}")
    spec.update({k: v for k, v in {"instrument": instrument, "agent": agent, "budget": budget,
                                   "seed": seed}.items() if v is not None})
    c = _client(url, token)
    camp = _call(c.create_campaign, proposal, spec, start=start, priority=priority)
    console.print(f"campaign [bold]{camp['id']}[/] on {camp['instrument']} with agent {camp['agent']}, "
                  f"budget {camp['budget']}: {camp['state']}")
    console.print(f"watch it: sdl campaign watch {camp['id']}")


def campaign_watch(
    campaign_id: str = typer.Argument(..., help="campaign id (or a unique prefix of one)"),
    url: Optional[str] = _URL,
    token: Optional[str] = _TOKEN,
) -> None:
    """Follow a campaign live (WebSocket): a progress bar with the best value so far, until it ends."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from sdl.client import CAMPAIGN_FINAL

    c = _client(url, token)
    campaign_id = _resolve_campaign(c, campaign_id)
    camp = _call(c.campaign, campaign_id)
    done = threading.Event()

    def fmt(v: Any) -> str:
        return "-" if v is None else f"{v:.4g}"

    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("best {task.fields[best]}"), TextColumn("{task.fields[state]}"), TimeElapsedColumn(),
                  console=console) as progress:
        task = progress.add_task(f"{camp['agent']} on {camp['instrument']}", total=camp["budget"],
                                 completed=camp["experiments"], best=fmt((camp.get("best") or {}).get("value")),
                                 state=camp["state"])

        def poll() -> None:  # the stream may miss the end if it connects late; poll as well
            while not done.wait(1.0):
                try:
                    cur = c.campaign(campaign_id)
                except Exception:  # noqa: BLE001
                    continue
                progress.update(task, completed=cur["experiments"], state=cur["state"],
                                best=fmt((cur.get("best") or {}).get("value")))
                if cur["state"] in CAMPAIGN_FINAL:
                    done.set()

        if camp["state"] not in CAMPAIGN_FINAL:
            poller = threading.Thread(target=poll, daemon=True)
            poller.start()
            try:
                for ev in c.stream(campaign_id=campaign_id, types="campaign", timeout=1.0):
                    if ev.get("event") == "observation":
                        progress.update(task, completed=ev["n"], best=fmt(ev.get("best")))
                    elif ev.get("event") == "state":
                        progress.update(task, state=ev["state"])
                        if ev["state"] in CAMPAIGN_FINAL:
                            break
                    if done.is_set():
                        break
            except Exception:  # noqa: BLE001 - no stream: the poller carries on
                pass
            while not done.is_set():
                done.wait(0.5)
            done.set()
    camp = _call(c.campaign, campaign_id)
    best = camp.get("best")
    console.print(f"campaign {campaign_id}: {camp['state']} ({camp['message']}); "
                  f"{camp['experiments']} experiments")
    if best:
        console.print(f"best {camp['objective']['name']}: [bold]{best['value']:.4g}[/] at " + ", ".join(
            f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in best["params"].items()))


def register(app: typer.Typer, campaign_app: typer.Typer) -> None:
    """Add the service commands to the ``sdl`` CLI."""
    app.command("serve")(serve)
    app.command("worker")(worker)
    app.command("submit")(submit)
    campaign_app.command("create")(campaign_create)
    campaign_app.command("watch")(campaign_watch)

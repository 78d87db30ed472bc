"""``sdl workflow run`` ends with its workflows' ids; ``sdl workflow list`` lists them (newest
first), so that ``sdl workflow show`` / ``sdl workflow sample`` have ids to take; a campaign or a
store that is not there is one ``error:`` line and exit 2."""

from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner

from sdl.cli import app
from sdl.store import Store, sqlite_url
from sdl.workflows.engine import Engine

BUDGET = 12  # more than the 10 that `run` shows


def _invoke(*args: str):
    res = CliRunner().invoke(app, list(args))
    assert "Traceback" not in res.output, res.output
    return res


def _flat(text: str) -> str:
    return " ".join(text.split())  # rich wraps long lines


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    """One small campaign run through the CLI (threads, no simulated time)."""
    from sdl.workflows.stations import three_station_workflow

    d = tmp_path_factory.mktemp("wfl")
    url = sqlite_url(d / "wf.sqlite")
    spec = d / "spec.json"  # the three-station example with a random agent: quick
    spec.write_text(json.dumps({"name": "list", "workflow": three_station_workflow(), "time_scale": 0.0,
                                "agent": "random", "parallel": 4}))
    res = _invoke("workflow", "run", str(spec), "--store", url, "--budget", str(BUDGET), "--workers", "threads",
                  "--lease", "2", "--timeout", "240")
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout.strip().splitlines()[-1])  # still the last line, for scripts
    store = Store(url)
    eng = Engine(store)
    rows = eng.workflows(summary["campaign_id"])  # oldest first
    samples = {s["workflow_id"]: s["id"] for s in eng.samples(summary["campaign_id"])}
    store.close()
    return {"url": url, "out": res.stdout, "cid": summary["campaign_id"], "ids": [r.id for r in rows],
            "samples": samples}


def test_run_ends_with_the_newest_workflows_ids_and_how_to_see_the_rest(ran):
    out = ran["out"]
    assert len(ran["ids"]) == BUDGET
    newest, older = ran["ids"][-10:], ran["ids"][:-10]
    shown = re.findall(r"\b[0-9a-f]{32}\b", out.split("workflows of campaign", 1)[1])
    listed = [i for i in shown if i in ran["ids"]]
    assert listed[:10] == newest[::-1], out  # the last 10, newest first
    assert not set(older) & set(listed[:10]), out
    for wid in newest:
        assert ran["samples"][wid] in out, out  # each with its sample
    flat = _flat(out)
    assert f"the last 10 of {BUDGET}" in flat, out
    assert f"{BUDGET - 10} more: sdl workflow list --campaign {ran['cid']} --limit {BUDGET} --store {ran['url']}" \
        in out, out  # one unwrapped line: copyable
    assert f"look at one: sdl workflow show {newest[-1]} --store {ran['url']}" in out, out


def test_list_gives_the_stores_ids_newest_first_and_show_takes_one(ran):
    res = _invoke("workflow", "list", "--store", ran["url"], "--json", "--limit", "100")
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)
    assert [r["id"] for r in rows] == ran["ids"][::-1]
    assert {r["id"]: r["sample_id"] for r in rows} == ran["samples"]
    assert {r["campaign_id"] for r in rows} == {ran["cid"]} and {r["status"] for r in rows} == {"done"}
    assert all("fom" in r["values"] and r["created"] for r in rows), rows

    # the table: ids whole, newest first, limited
    res = _invoke("workflow", "list", "--store", ran["url"], "--campaign", ran["cid"][:8], "--limit", "3")
    assert res.exit_code == 0, res.output
    ids = [i for i in re.findall(r"\b[0-9a-f]{32}\b", res.stdout) if i in ran["ids"]]
    assert ids[:3] == ran["ids"][::-1][:3] and len(set(ids)) == 3, res.stdout
    assert f"{BUDGET - 3} older not shown" in res.stdout, res.stdout

    wid = rows[-1]["id"]  # any listed id: show and sample take it
    res = _invoke("workflow", "show", wid, "--store", ran["url"])
    assert res.exit_code == 0, res.output
    shown = json.loads(res.stdout)
    assert shown["id"] == wid and shown["campaign_id"] == ran["cid"], shown
    assert rows[-1]["sample_id"] in {t["sample_id"] for t in shown["tasks"]}
    res = _invoke("workflow", "sample", rows[-1]["sample_id"], "--store", ran["url"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["workflow_id"] == wid


def test_an_unknown_campaign_is_one_error_naming_it(ran):
    res = _invoke("workflow", "list", "--store", ran["url"], "--campaign", "nope-campaign")
    assert res.exit_code == 2, res.output
    err = _flat(res.stderr)
    assert err.startswith("error: --campaign:") and "'nope-campaign'" in err, err
    assert len(res.stderr.strip().splitlines()) <= 3 and res.stdout == "", res.output


def test_a_plain_campaign_is_no_workflow_campaign(ran):
    from sdl.campaign import create_campaign

    store = Store(ran["url"])
    create_campaign(store, {"instrument": "sim-xrd", "agent": "random", "budget": 1}, "plain-1")
    store.close()
    res = _invoke("workflow", "list", "--store", ran["url"], "--campaign", "plain-1")
    assert res.exit_code == 2 and "no workflow campaign id starts with this" in _flat(res.stderr), res.output


@pytest.mark.parametrize("cmd", [["list"], ["show", "abc"], ["sample", "abc"]])
def test_a_store_that_is_not_there_is_said_and_not_created(tmp_path, cmd):
    path = tmp_path / "nope.sqlite"
    res = _invoke("workflow", *cmd, "--store", sqlite_url(path))
    assert res.exit_code == 2, res.output
    err = _flat(res.stderr)
    assert err.startswith("error: --store: no store there") and "nope.sqlite" in "".join(err.split()), err
    assert not path.exists()


def test_the_default_store_that_is_not_there_names_sdl_store_url(tmp_path, monkeypatch):
    from sdl.config import get_settings

    path = tmp_path / "default.sqlite"
    monkeypatch.setenv("SDL_STORE_URL", sqlite_url(path))
    getattr(get_settings, "cache_clear", lambda: None)()
    try:
        res = _invoke("workflow", "list")
    finally:
        monkeypatch.delenv("SDL_STORE_URL")
        getattr(get_settings, "cache_clear", lambda: None)()
    assert res.exit_code == 2 and "SDL_STORE_URL" in res.stderr and "default.sqlite" in "".join(res.stderr.split()), \
        res.output
    assert not path.exists()


def test_limit_must_be_positive(ran):
    res = _invoke("workflow", "list", "--store", ran["url"], "--limit", "0")
    assert res.exit_code == 2 and "--limit" in res.stderr, res.output

"""The HTTP service end to end, against a real uvicorn server on loopback.

Accounts and tokens, proposals and approval, the audit log, instruments and their
plan schemas, experiments (validation at submit time, queue, run, documents),
campaigns (progress, user points, veto, exports), usage metering, the client and
the CLI commands.
"""

from __future__ import annotations

import csv
import io
import json
import time
import zipfile

import httpx
import pytest

from sdl.client import Client, ServiceError
from sdl.service.testing import Lab, start_lab
from sdl.testing import wait_until

XRD_POINT = {"A": 0.3, "B": 0.45, "C": 0.25, "temperature": 420.0}


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    lab = start_lab(tmp_path_factory.mktemp("svc-api"), ("sim-xrd", "pool:p3ht"))
    yield lab
    lab.close()
    lab.server.stop()


@pytest.fixture(scope="module")
def alice(lab: Lab):
    return lab.user("alice")


@pytest.fixture(scope="module")
def prop(lab: Lab, alice):
    return lab.proposal(alice, ["sim-xrd", "pool:p3ht"], title="phase search")


def _err(fn, *a, **kw) -> ServiceError:
    with pytest.raises(ServiceError) as info:
        fn(*a, **kw)
    return info.value


# ------------------------------------------------------------------ accounts
def test_health_and_authentication(lab: Lab):
    r = httpx.get(lab.url + "/health")
    assert r.status_code == 200 and r.json()["status"] == "ok"
    assert set(r.json()["instruments"]) == {"sim-xrd", "pool:p3ht"}
    r = httpx.get(lab.url + "/api/instruments")
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    r = httpx.get(lab.url + "/api/instruments", headers={"Authorization": "Bearer sdl_not-a-token"})
    assert r.status_code == 401
    assert lab.admin.me()["role"] == "admin"


def test_first_start_creates_admin_once(lab: Lab, tmp_path):
    from sdl.service.api import create_app

    # same store again: the admin exists, no new token is printed
    app = create_app(lab.server.settings.model_copy(update={"start_workers": False, "instruments": []}))
    assert app.state.initial_admin_token is None
    app.state.service.stop()


def test_tokens_are_hashed_revocable_and_expire(lab: Lab):
    bob = lab.user("bob-tokens")
    extra = bob.create_token("laptop", ttl_days=30)
    assert extra["token"].startswith("sdl_") and extra["expires_at"]
    # only the hash is stored
    from sqlalchemy import select

    from sdl.service.auth import hash_token
    from sdl.service.db import TokenRow

    with lab.service.db.session() as s:
        row = s.scalar(select(TokenRow).where(TokenRow.id == extra["id"]))
        assert row.token_hash == hash_token(extra["token"]) and extra["token"] not in (row.token_hash, row.prefix)
    c2 = Client(lab.url, extra["token"])
    assert c2.me()["name"] == "bob-tokens"
    bob.revoke_token(extra["id"])
    assert _err(c2.me).status == 401
    short = bob.create_token("short", ttl_days=1e-6)  # 0.09 s
    time.sleep(0.2)
    assert _err(Client(lab.url, short["token"]).me).status == 401
    # a user cannot revoke someone else's token (404: not theirs), an admin can
    carol = lab.user("carol-tokens")
    assert _err(carol.revoke_token, extra["id"]).status == 404
    assert any(a["action"] == "token.revoke" for a in lab.admin.get("/api/audit", limit=50))


def test_roles(lab: Lab, alice):
    assert _err(alice.create_user, "mallory").status == 403
    sci = lab.user("sci-roles", role="scientist")
    assert sci.me()["role"] == "scientist"
    e = _err(lab.admin.create_user, "bad name!")
    assert e.status == 422 and e.field == "name"
    r = lab.admin.request("PATCH", f"/api/users/{sci.user['id']}", json={"active": False})
    assert r["active"] is False
    assert _err(sci.me).status == 401
    lab.admin.request("PATCH", f"/api/users/{sci.user['id']}", json={"active": True})
    assert sci.me()["name"] == "sci-roles"


# ----------------------------------------------------------------- proposals
def test_proposal_needs_approval_and_is_audited(lab: Lab, alice):
    p = alice.create_proposal("pending one", ["sim-xrd"])
    assert p["status"] == "pending" and p["members"][0]["role"] == "pi"
    e = _err(alice.submit, p["id"], "sim-xrd", XRD_POINT)
    assert e.status == 409 and "approve" in e.message
    assert _err(alice.approve, p["id"]).status == 403
    approved = lab.admin.approve(p["id"], allocation={"experiments": 5})
    assert approved["status"] == "approved" and approved["allocation"]["experiments"] == 5
    log = alice.get(f"/api/proposals/{p['id']}/audit")
    actions = [(a["action"], a["actor"]) for a in log]
    assert ("proposal.create", "alice") in actions and ("proposal.approve", "admin") in actions
    assert all(a["at"] for a in log)
    e = _err(alice.create_proposal, "bad", ["sim-xrd"], kind="coalition")
    assert e.status == 422 and "coalition" in e.message
    e = _err(alice.create_proposal, "bad", ["nope"])
    assert e.status == 422 and e.field == "instruments.0"


# --------------------------------------------------------------- instruments
def test_instruments_list_status_and_plan_schemas(lab: Lab, alice):
    insts = {i["name"]: i for i in alice.instruments()}
    xrd = insts["sim-xrd"]
    assert xrd["status"]["state"] in ("idle", "running")
    assert set(xrd["plans"]) == {"autonomous_step", "exposure_series"}
    schema = xrd["plans"]["autonomous_step"]
    t = schema["properties"]["temperature"]
    assert (t["minimum"], t["maximum"], t["x-units"]) == (150.0, 650.0, "°C")
    assert schema["properties"]["exposure"]["x-units"] == "s"
    assert schema["x-constraints"][0]["components"] == ["A", "B", "C"]
    assert set(schema["required"]) == {"A", "B", "C", "temperature"}
    assert alice.get("/api/instruments/pool:p3ht/plans/autonomous_step")["x-pool"]["size"] == 178
    assert len(alice.get("/api/instruments/pool:p3ht/pool")) == 178
    assert _err(alice.instrument, "nope").status == 404
    assert _err(alice.get, "/api/instruments/sim-xrd/plans/nope").status == 404


# --------------------------------------------------------------- experiments
@pytest.mark.parametrize("params, field", [
    ({**XRD_POINT, "temperature": 900}, "parameters.temperature"),
    ({**XRD_POINT, "temperature": "hot"}, "parameters.temperature"),
    ({k: v for k, v in XRD_POINT.items() if k != "A"}, "parameters.A"),
    ({**XRD_POINT, "A": 0.5}, "parameters.composition"),
    ({**XRD_POINT, "pressure": 1}, "parameters.pressure"),
    ({**XRD_POINT, "exposure": -1}, "parameters.exposure"),
])
def test_submit_validates_naming_the_field(alice, prop, params, field):
    e = _err(alice.submit, prop["id"], "sim-xrd", params)
    assert e.status == 422 and e.field == field, e.body
    assert e.body["detail"][0]["loc"] == ["body", *field.split(".")]


def test_submit_unknown_instrument_plan_and_body_fields(lab: Lab, alice, prop):
    assert _err(alice.submit, prop["id"], "nope", XRD_POINT).status == 404
    assert _err(alice.submit, prop["id"], "sim-xrd", XRD_POINT, plan="nope").status == 404
    r = alice.http.post("/api/experiments", json={"proposal_id": prop["id"], "instrument": "sim-xrd",
                                                  "parameters": XRD_POINT, "colour": "red"})
    assert r.status_code == 422 and r.json()["field"] == "colour"
    r = alice.http.post("/api/experiments", json={"proposal_id": prop["id"], "instrument": "sim-xrd",
                                                  "parameters": XRD_POINT, "priority": 99})
    assert r.status_code == 422 and r.json()["field"] == "priority"
    r = alice.http.post("/api/experiments", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"] == "bad_request"  # docs/http-api.md: not a field's fault
    pool_point = {"p3ht_content": 50.0, "d1_content": 10.0, "d2_content": 10.0, "d6_content": 10.0,
                  "d8_content": 20.0}
    e = _err(alice.submit, prop["id"], "pool:p3ht", pool_point)
    assert e.status == 422 and "pool" in e.message


def test_experiment_runs_and_keeps_its_documents(lab: Lab, alice, prop):
    item = alice.submit(prop["id"], "sim-xrd", XRD_POINT, note="first")
    assert item["status"] == "queued" and item["parameters"]["exposure"] == 1.0
    done = alice.wait(item["id"], timeout=30)
    assert done["status"] == "done", done
    assert 0 < done["result"]["values"]["fom"] < 1.5
    docs = alice.documents(item["id"])
    assert [d["name"] for d in docs][0] == "start" and docs[-1]["name"] == "stop"
    start = docs[0]["doc"]
    assert start["queue_item_id"] == item["id"] and start["proposal"] == prop["id"]
    run = alice.get(f"/api/runs/{done['run_uid']}")
    assert run["status"] == "success" and len(run["documents"]) == len(docs)
    # a pool instrument, and the second plan
    point = alice.get("/api/instruments/pool:p3ht/pool")[3]
    series = alice.submit(prop["id"], "pool:p3ht", {**point, "repeats": 2}, plan="exposure_series")
    done = alice.wait(series["id"], timeout=30)
    assert done["status"] == "done" and done["result"]["values"]["conductivity"] > 0
    events = [d for d in alice.documents(series["id"]) if d["name"] == "event"]
    assert len(events) == 2
    listed = alice.experiments(proposal_id=prop["id"])
    assert {item["id"], series["id"]} <= {x["id"] for x in listed}


def test_cancel_queued_experiment(lab: Lab, alice, prop):
    sci = lab.user("sci-cancel", role="scientist")
    sci.pause("sim-xrd")
    try:
        item = alice.submit(prop["id"], "sim-xrd", XRD_POINT)
        q = alice.queue("sim-xrd")
        assert any(x["id"] == item["id"] and x["position"] >= 1 for x in q)
        out = alice.cancel(item["id"], reason="changed my mind")
        assert out["status"] == "cancelled"
        assert _err(alice.cancel, item["id"]).status == 409
    finally:
        sci.resume("sim-xrd")


# ----------------------------------------------------------------- campaigns
def test_campaign_spec_validated(alice, prop):
    e = _err(alice.create_campaign, prop["id"], {"instrument": "sim-xrd", "agent": "genius"})
    assert e.status == 422 and e.field == "spec.agent" and "allowed" in e.message
    e = _err(alice.create_campaign, prop["id"], {"instrument": "sim-xrd", "budget": 0})
    assert e.status == 422 and e.field == "spec.budget"
    assert _err(alice.create_campaign, prop["id"], {"instrument": "pool:agnp"}).status == 404
    space = {"parameters": [{"kind": "range", "name": n, "lower": 0, "upper": 1} for n in "ABC"]
             + [{"kind": "range", "name": "temperature", "lower": 100, "upper": 500}],
             "compositions": [{"components": ["A", "B", "C"]}]}
    e = _err(alice.create_campaign, prop["id"], {"instrument": "sim-xrd", "space": space})
    assert e.status == 422 and e.field == "spec.space.parameters.3.lower"


@pytest.mark.parametrize("spec, field, allowed", [
    ({"instrument": "sim-xrd", "plan": "nope"}, "spec.plan", "allowed: ['autonomous_step'"),
    ({"instrument": "sim-xrd", "agent": "bo", "agent_options": {"beta": 3}}, "spec.agent_options",
     "unknown option(s) ['beta'] for agent 'bo' on this space"),
    ({"instrument": "sim-xrd", "agent": "botorch", "agent_options": {"beta": -1}}, "spec.agent_options.beta",
     "must be a number above 0"),
    ({"instrument": "pool:p3ht", "agent": "bo", "agent_options": {"kernel": "nope"}}, "spec.agent_options.kernel",
     "must be one of ['rbf', 'matern']"),
    ({"instrument": "pool:p3ht", "agent": "bo", "agent_options": {"n_init": 0}}, "spec.agent_options.n_init",
     "must be a whole number from 1 to 10000"),
    ({"instrument": "sim-xrd", "agent": "bo", "agent_options": {"exposure": {"choices": []}}},
     "spec.agent_options.exposure", "choices: List should have at least 1 item"),
])
def test_a_campaign_that_could_not_run_is_refused_before_anything_is_stored(alice, prop, spec, field, allowed):
    """The plan and the agent's options are checked when the campaign is created, not when
    its first model is fitted: nothing is stored, no campaign is started."""
    before = {c["id"] for c in alice.campaigns()}
    e = _err(alice.create_campaign, prop["id"], {**spec, "budget": 3}, start=True)
    assert e.status == 422 and e.field == field and allowed in e.message, (e.field, e.message)
    assert {c["id"] for c in alice.campaigns()} == before


def test_requests_the_service_cannot_read_get_the_documented_answers(lab: Lab, alice, prop):
    http = alice.http
    r = http.post("/api/experiments", content=b'{"proposal_id": ', headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"] == "bad_request" and "malformed" in r.json()["detail"]
    body = json.dumps({"proposal_id": prop["id"], "instrument": "sim-xrd", "parameters": XRD_POINT})
    r = http.post("/api/experiments", content=body, headers={"content-type": "text/plain"})
    assert r.status_code == 415 and r.json()["error"] == "unsupported_media_type"
    assert "application/json" in r.json()["detail"]
    r = http.post("/api/proposals", json={"title": "nul\x00title", "instruments": ["sim-xrd"]})
    assert r.status_code == 422 and r.json()["field"] == "title" and "NUL" in r.json()["message"]
    r = http.post("/api/campaigns", json={"proposal_id": prop["id"], "spec": {"instrument": "sim-xrd",
                                                                            "name": ["a", "b\x00"]}})
    assert r.status_code == 422 and r.json()["field"] == "spec.name.1"  # PostgreSQL could store neither
    r = httpx.get(lab.url + "/static/" + "a" * 300 + ".js")  # a name the file system refuses
    assert r.status_code == 404 and r.json()["error"] == "not_found"
    camp = alice.create_campaign(prop["id"], {"instrument": "sim-xrd", "agent": "random", "budget": 1})
    r = http.post(f"/api/campaigns/{camp['id']}/stop")  # no body: every field of an action is optional
    assert r.status_code == 200 and r.json()["state"] == "stopped"


def test_an_instrument_outside_the_proposal_is_refused_before_its_parameters(lab: Lab, alice):
    only_xrd = lab.proposal(alice, ["sim-xrd"])
    e = _err(alice.submit, only_xrd["id"], "pool:p3ht", {"A": 0.3})
    assert e.status == 403


def test_campaign_over_http(lab: Lab, alice, prop):
    camp = alice.create_campaign(prop["id"], {"name": "http", "instrument": "sim-xrd", "agent": "random",
                                              "budget": 6, "seed": 3})
    cid = camp["id"]
    assert camp["state"] == "created"
    # a user's point and a veto, queued before the agent runs
    mine = alice.add_point(cid, XRD_POINT, reason="known good")
    assert mine["provenance"]["agent"] == "user"
    other = alice.add_point(cid, {**XRD_POINT, "temperature": 600.0}, reason="to veto")
    assert alice.veto(cid, other["id"], reason="too hot")["status"] == "vetoed"
    assert _err(alice.veto, cid, other["id"]).status == 409
    e = _err(alice.add_point, cid, {**XRD_POINT, "temperature": 1000})
    assert e.status == 422 and e.field == "parameters.temperature"
    alice.campaign_action(cid, "start")
    final = alice.wait_campaign(cid, timeout=60)
    assert final["state"] == "completed" and final["experiments"] == 6
    assert "budget" in final["message"]
    sugg = {s["id"]: s for s in final["suggestions"]}
    assert sugg[mine["id"]]["status"] == "done" and sugg[other["id"]]["status"] == "vetoed"
    assert sugg[other["id"]]["provenance"]["vetoed"]["reason"] == "too hot"
    assert all(s["provenance"]["agent"] in ("user", "random") for s in final["suggestions"])
    assert len(final["observations"]) == 6 and final["best"]["value"] == max(final["best_trace"][-1:])
    # the user's point ran first
    assert final["observations"][0]["suggestion_id"] == mine["id"]
    # data: table (JSON, CSV), export, RO-Crate
    table = alice.table(cid)
    assert "fom" in table["columns"] and len(table["rows"]) == 7
    rows = list(csv.DictReader(io.StringIO(alice.table(cid, format="csv"))))
    assert len(rows) == 7 and {r["status"] for r in rows} == {"done", "vetoed"}
    export = alice.export(cid)
    assert len(export["runs"]) == 6 and export["runs"][0]["documents"][0]["name"] == "start"
    z = zipfile.ZipFile(io.BytesIO(alice.rocrate(cid)))
    names = z.namelist()
    assert "ro-crate-metadata.json" in names and "table.csv" in names
    assert sum(n.startswith("runs/") for n in names) == 6
    meta = json.loads(z.read("ro-crate-metadata.json"))
    assert any(e.get("@id") == "table.csv" for e in meta["@graph"])
    # the campaign's steps went through the queue and were metered
    steps = alice.experiments(campaign_id=cid)
    assert len([s for s in steps if s["status"] == "done"]) == 6
    assert _err(alice.campaign_action, cid, "pause").status == 409


def test_a_campaign_through_the_service_stops_at_its_target(lab: Lab, alice, prop):
    """The planner judges the stopping rule with the campaign's agent (which, choosing
    exposures, judges a target by its model: tests/test_exposure.py)."""
    camp = alice.create_campaign(prop["id"], {"instrument": "sim-xrd", "agent": "bo", "budget": 6, "seed": 1,
                                              "stopping": {"target": -1.0},
                                              "agent_options": {"exposure": {"choices": [0.05, 0.5]}}})
    alice.campaign_action(camp["id"], "start")
    final = alice.wait_campaign(camp["id"], timeout=60)
    assert final["state"] == "completed" and final["experiments"] == 1
    assert final["message"].startswith("target -1.0 reached")


def test_campaign_pause_resume_stop(lab: Lab, alice, prop):
    sci = lab.user("sci-camp", role="scientist")
    sci.pause("pool:p3ht", immediate=False)
    try:
        camp = alice.create_campaign(prop["id"], {"instrument": "pool:p3ht", "agent": "random", "budget": 20},
                                     start=True)
        cid = camp["id"]
        wait_until(lambda: alice.campaign(cid)["queue"], 20, interval=0.05, what="a queued campaign step")
        paused = alice.campaign_action(cid, "pause")
        assert paused["state"] == "paused"
        assert alice.campaign(cid)["queue"] == []  # the queued step was withdrawn
        pending = [s for s in alice.campaign(cid)["suggestions"] if s["status"] == "pending"]
        assert len(pending) == 1  # kept for later
        sci.resume("pool:p3ht")
        time.sleep(0.3)
        assert alice.campaign(cid)["experiments"] == 0
        alice.campaign_action(cid, "resume")
        wait_until(lambda: alice.campaign(cid)["experiments"] >= 3, 30, interval=0.05, what="three campaign experiments")
        stopped = alice.campaign_action(cid, "stop", reason="enough")
        assert stopped["state"] == "stopped"
        n = alice.campaign(cid)["experiments"]
        time.sleep(0.5)
        assert alice.campaign(cid)["experiments"] <= n + 1  # at most the step already running
        assert 3 <= n < 20
    finally:
        sci.resume("pool:p3ht")


# --------------------------------------------------------------------- usage
def test_usage_report(lab: Lab, alice, prop):
    # an experiment of its own: the test does not rely on others in the module having run first (xdist)
    assert alice.wait(alice.submit(prop["id"], "sim-xrd", XRD_POINT, note="usage")["id"])["status"] == "done"
    rows = alice.usage()
    mine = [r for r in rows if r["proposal_id"] == prop["id"]]
    assert mine and all(r["experiments"] >= 1 and r["seconds"] >= 0 for r in mine)
    assert {r["instrument"] for r in mine} >= {"sim-xrd"}
    text = alice.usage(format="csv")
    assert text.splitlines()[0].startswith("proposal_id,title,dedicated,instrument,experiments")
    shares = lab.admin.get("/api/usage/shares")
    assert "sim-xrd" in shares and shares["sim-xrd"]["shared_experiments"] >= 1
    outsider = lab.user("usage-outsider")
    assert all(r["proposal_id"] != prop["id"] for r in outsider.usage())


# --------------------------------------------------------------- client, CLI
def test_cli_commands(lab: Lab, alice, prop, monkeypatch):
    import typer
    from typer.testing import CliRunner

    from sdl.cli import service as service_cli

    app, campaign_app = typer.Typer(), typer.Typer()
    app.add_typer(campaign_app, name="campaign")
    service_cli.register(app, campaign_app)
    monkeypatch.setenv("SDL_URL", lab.url)
    monkeypatch.setenv("SDL_TOKEN", alice.token)
    runner = CliRunner()
    r = runner.invoke(app, ["submit", "sim-xrd", "--proposal", prop["id"], "-p", "A=0.3", "-p", "B=0.45",
                            "-p", "C=0.25", "-p", "temperature=420", "--wait"])
    assert r.exit_code == 0, r.output
    assert '"status": "done"' in r.output
    r = runner.invoke(app, ["submit", "sim-xrd", "--proposal", prop["id"], "-p", "A=0.3", "-p", "B=0.45",
                            "-p", "C=0.25", "-p", "temperature=2000"])
    said = " ".join(r.output.split())  # the README's example, word for word; the field named once
    assert r.exit_code == 2 and said == ("error: parameters.temperature: out of range: allowed [150.0, 650.0] °C "
                                         "(got 2000) (HTTP 422)"), said
    r = runner.invoke(app, ["campaign", "create", "--proposal", prop["id"], "--instrument", "sim-xrd",
                            "--agent", "random", "--budget", "3"])
    assert r.exit_code == 0, r.output
    cid = r.output.split()[1]
    r = runner.invoke(app, ["campaign", "watch", cid])
    assert r.exit_code == 0, r.output
    assert "completed" in r.output and "best fom" in r.output
    r = runner.invoke(app, ["submit", "sim-xrd", "--proposal", prop["id"], "--token", "sdl_bad"])
    assert r.exit_code == 2 and "401" in r.output


def test_settings_file_env_and_overrides(tmp_path, monkeypatch):
    from sdl.errors import InvalidInput
    from sdl.service.settings import load_settings

    cfg = tmp_path / "sdl.toml"
    cfg.write_text('port = 9001\nrate_limit_per_minute = 10\n'
                   '[[instruments]]\nname = "sim-xrd"\ndedicated_fraction = 0.2\n')
    for var in ("SDL_PORT", "SDL_INSTRUMENTS", "SDL_RATE_LIMIT_PER_MINUTE", "SDL_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    s = load_settings(cfg)
    assert s.port == 9001 and s.rate_limit_per_minute == 10
    assert [(i.name, i.dedicated_fraction) for i in s.instruments] == [("sim-xrd", 0.2)]
    monkeypatch.setenv("SDL_PORT", "9002")
    assert load_settings(cfg).port == 9002  # the environment beats the file
    assert load_settings(cfg, port=9003).port == 9003  # options beat both
    monkeypatch.setenv("SDL_INSTRUMENTS", "pool:p3ht,pool:agnp")
    assert [i.name for i in load_settings(cfg).instruments] == ["pool:p3ht", "pool:agnp"]
    monkeypatch.setenv("SDL_INSTRUMENTS", "sim-xrd,nope")
    with pytest.raises(InvalidInput) as e:
        load_settings(cfg)
    assert e.value.field == "instruments.1.name" and "allowed" in e.value.message

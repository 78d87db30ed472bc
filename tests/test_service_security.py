"""Security of the service: a role x endpoint matrix (anonymous, member, a user of a
foreign proposal, scientist, admin), no leaks of proprietary data (HTTP and live
stream), open data after the embargo, coalitions, 413 and 429."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import threading

import pytest

from sdl.client import Client
from sdl.service.auth import RateLimiter
from sdl.service.testing import start_lab

XRD = {"A": 0.3, "B": 0.45, "C": 0.25, "temperature": 420.0}
SECRET_T = 421.234567  # a parameter value that must never reach an outsider


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    lab = start_lab(tmp_path_factory.mktemp("svc-sec"), ("sim-xrd",))
    alice, eve = lab.user("sec-alice"), lab.user("sec-eve")
    sci = lab.user("sec-sci", role="scientist")
    lab.user("sec-bob")
    p = lab.proposal(alice, ["sim-xrd"], title="secret alloy")
    pe = lab.proposal(eve, ["sim-xrd"], title="eve's own")
    item = alice.wait(alice.submit(p["id"], "sim-xrd", {**XRD, "temperature": SECRET_T})["id"])
    camp = alice.create_campaign(p["id"], {"instrument": "sim-xrd", "agent": "random", "budget": 2}, start=True)
    camp = alice.wait_campaign(camp["id"], timeout=30)
    idle = alice.create_campaign(p["id"], {"instrument": "sim-xrd", "agent": "random", "budget": 2})
    past = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=1)).isoformat()
    future = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=30)).isoformat()
    open_past = lab.proposal(alice, ["sim-xrd"], kind="open", approve=False)
    lab.admin.approve(open_past["id"], embargo_until=past)
    open_future = lab.proposal(alice, ["sim-xrd"], kind="open", approve=False)
    lab.admin.approve(open_future["id"], embargo_until=future)
    coal_a = lab.proposal(alice, ["sim-xrd"], kind="coalition", coalition="perovskites")
    coal_e = lab.proposal(eve, ["sim-xrd"], kind="coalition", coalition="perovskites")
    coal_s = lab.proposal(sci, ["sim-xrd"], kind="coalition", coalition="other")
    items = {name: alice.wait(alice.submit(pp["id"], "sim-xrd", XRD)["id"])
             for name, pp in [("open_past", open_past), ("open_future", open_future), ("coalition", coal_a)]}
    w = dict(lab=lab, alice=alice, eve=eve, sci=sci, admin=lab.admin, anon=Client(lab.url, ""), p=p, pe=pe,
             item=item, camp=camp, idle=idle, items=items, coal_e=coal_e, coal_s=coal_s)
    yield w
    lab.close()
    lab.server.stop()


_n = itertools.count()

ROLES = ("anon", "alice", "eve", "sci", "admin")
# (method, path, body, expected status for anon, alice (member), eve (foreign user), scientist, admin)
MATRIX = [
    ("GET", "/api/instruments", None, (401, 200, 200, 200, 200)),
    ("GET", "/api/me", None, (401, 200, 200, 200, 200)),
    ("GET", "/api/experiments/{item}", None, (401, 200, 404, 404, 404)),
    ("GET", "/api/experiments/{item}/documents", None, (401, 200, 404, 404, 404)),
    ("GET", "/api/runs/{run}", None, (401, 200, 404, 404, 404)),
    ("GET", "/api/campaigns/{camp}", None, (401, 200, 404, 404, 404)),
    ("GET", "/api/campaigns/{camp}/suggestions", None, (401, 200, 404, 404, 404)),
    ("GET", "/api/campaigns/{camp}/observations", None, (401, 200, 404, 404, 404)),
    ("GET", "/api/campaigns/{camp}/table?format=csv", None, (401, 200, 404, 404, 404)),
    ("GET", "/api/campaigns/{camp}/export", None, (401, 200, 404, 404, 404)),
    ("GET", "/api/campaigns/{camp}/rocrate", None, (401, 200, 404, 404, 404)),
    ("POST", "/api/campaigns/{idle}/points", {"parameters": XRD}, (401, 201, 404, 404, 404)),
    ("POST", "/api/campaigns/{idle}/pause", {}, (401, 409, 404, 409, 409)),
    ("GET", "/api/proposals/{p}", None, (401, 200, 404, 404, 200)),
    ("GET", "/api/proposals/{p}/audit", None, (401, 200, 404, 404, 200)),
    ("POST", "/api/proposals/{p}/members", {"user": "sec-bob"}, (401, 200, 404, 404, 200)),
    ("DELETE", "/api/proposals/{p}/members/sec-bob", None, (401, 200, 404, 404, 404)),
    ("POST", "/api/proposals/{p}/approve", {}, (401, 403, 403, 403, 200)),
    ("POST", "/api/experiments", {"proposal_id": "{p}", "instrument": "sim-xrd", "parameters": XRD},
     (401, 201, 404, 404, 404)),
    ("POST", "/api/experiments/{item}/cancel", {}, (401, 409, 404, 409, 409)),
    ("POST", "/api/campaigns", {"proposal_id": "{p}", "spec": {"instrument": "sim-xrd", "agent": "random"}},
     (401, 201, 404, 404, 404)),
    ("GET", "/api/audit", None, (401, 403, 403, 403, 200)),
    ("GET", "/api/users", None, (401, 403, 403, 200, 200)),
    ("POST", "/api/users", {"name": "new-{n}"}, (401, 403, 403, 403, 201)),
    ("PATCH", "/api/users/sec-eve", {"role": "user"}, (401, 403, 403, 403, 200)),
    ("POST", "/api/tokens", {"name": "x"}, (401, 201, 201, 201, 201)),
    ("GET", "/api/tokens?all=true", None, (401, 200, 200, 200, 200)),
    ("POST", "/api/instruments/sim-xrd/pause", {"immediate": False}, (401, 403, 403, 200, 200)),
    ("POST", "/api/instruments/sim-xrd/resume", {}, (401, 403, 403, 200, 200)),
    ("PUT", "/api/instruments/sim-xrd/share", {"dedicated_fraction": 0.0}, (401, 403, 403, 403, 200)),
    ("GET", "/api/usage/shares", None, (401, 404, 404, 200, 200)),
    ("GET", "/api/usage", None, (401, 200, 200, 200, 200)),
    ("GET", "/api/instruments/nope", None, (401, 404, 404, 404, 404)),
]


def _fill(obj, w):
    subs = {"item": w["item"]["id"], "run": w["item"]["run_uid"], "camp": w["camp"]["id"], "idle": w["idle"]["id"],
            "p": w["p"]["id"], "n": str(next(_n))}
    if isinstance(obj, str):
        for k, v in subs.items():
            obj = obj.replace("{" + k + "}", v)
        return obj
    if isinstance(obj, dict):
        return {k: _fill(v, w) for k, v in obj.items()}
    return obj


@pytest.mark.parametrize("method, path, body, expected", MATRIX, ids=[f"{m} {p}" for m, p, _, _ in MATRIX])
def test_role_endpoint_matrix(world, method, path, body, expected):
    for role, want in zip(ROLES, expected):
        c: Client = world[role]
        r = c.http.request(method, _fill(path, world), json=None if body is None else _fill(body, world))
        assert r.status_code == want, (role, method, path, r.status_code, r.text[:300])
        if role != "alice" and r.status_code >= 400:
            assert str(SECRET_T) not in r.text and "secret alloy" not in r.text


def test_no_leak_in_lists_queue_usage(world):
    eve, sci, admin, alice = world["eve"], world["sci"], world["admin"], world["alice"]
    pid = world["p"]["id"]
    for c in (eve, sci, admin):
        assert all(x["proposal_id"] != pid for x in c.experiments(limit=1000))
        assert all(x["proposal_id"] != pid for x in c.campaigns())
        assert str(SECRET_T) not in json.dumps(c.experiments(limit=1000))
    assert all(x["id"] != pid for x in eve.proposals())
    assert all(r["proposal_id"] != pid for r in eve.usage())
    # staff see usage (metering) but never the parameters
    assert any(r["proposal_id"] == pid for r in sci.usage())
    world["sci"].pause("sim-xrd", immediate=False)
    try:
        queued = alice.submit(pid, "sim-xrd", {**XRD, "temperature": SECRET_T})
        for c in (eve, sci):
            q = [x for x in c.queue("sim-xrd") if x["id"] == queued["id"]]
            assert q and q[0]["redacted"] and "parameters" not in q[0]
            assert str(SECRET_T) not in json.dumps(c.queue("sim-xrd"))
        assert "proposal_id" not in [x for x in eve.queue("sim-xrd") if x["id"] == queued["id"]][0]
        assert [x for x in alice.queue("sim-xrd") if x["id"] == queued["id"]][0]["parameters"]["temperature"] == SECRET_T
        alice.cancel(queued["id"])
    finally:
        world["sci"].resume("sim-xrd")


def test_live_stream_does_not_leak(world):
    alice, eve, pid = world["alice"], world["eve"], world["p"]["id"]
    got: dict[str, list] = {"alice": [], "eve": []}
    ready = threading.Barrier(3)

    def listen(name, c):
        it = c.stream(timeout=1.5)
        got[name].append(next(it))  # hello
        ready.wait()
        for ev in it:
            got[name].append(ev)
            if name == "alice" and ev.get("type") == "queue" and ev.get("status") == "done":
                break

    threads = [threading.Thread(target=listen, args=(n, world[n]), daemon=True) for n in ("alice", "eve")]
    for t in threads:
        t.start()
    ready.wait(timeout=20)
    item = alice.submit(pid, "sim-xrd", {**XRD, "temperature": SECRET_T})
    alice.wait(item["id"])
    for t in threads:
        t.join(10)
    alice_docs = [e for e in got["alice"] if e["type"] == "document" and e["item_id"] == item["id"]]
    assert [e["name"] for e in alice_docs][:1] == ["start"] and alice_docs[-1]["name"] == "stop"
    assert alice_docs[0]["doc"]["params"]["temperature"] == SECRET_T
    text = json.dumps(got["eve"])
    assert str(SECRET_T) not in text and pid not in text
    assert not [e for e in got["eve"] if e["type"] in ("document", "campaign")]
    eve_q = [e for e in got["eve"] if e["type"] == "queue" and e.get("item_id") == item["id"]]
    assert eve_q and all(e["redacted"] for e in eve_q)
    # a foreign campaign cannot be followed; a bad token is refused
    with pytest.raises(Exception) as e:
        next(eve.stream(campaign_id=world["camp"]["id"], timeout=3))
    assert "404" in str(e.value)
    with pytest.raises(Exception) as e:
        next(Client(world["lab"].url, "sdl_bad").stream(timeout=3))
    assert "401" in str(e.value)


def test_open_after_embargo_and_coalition(world):
    eve, sci, items = world["eve"], world["sci"], world["items"]
    assert eve.experiment(items["open_past"]["id"])["result"]["values"]["fom"] is not None
    for c in (eve, sci):
        with pytest.raises(Exception) as e:
            c.experiment(items["open_future"]["id"])
        assert getattr(e.value, "status", None) == 404
    assert eve.documents(items["coalition"]["id"])[0]["name"] == "start"  # same coalition
    with pytest.raises(Exception) as e:
        sci.experiment(items["coalition"]["id"])  # other coalition
    assert e.value.status == 404


def test_body_too_large_413(world):
    alice = world["alice"]
    big = {"proposal_id": world["p"]["id"], "instrument": "sim-xrd", "parameters": XRD, "note": "x" * 2_000_000}
    r = alice.http.post("/api/experiments", json=big)
    assert r.status_code == 413 and "too large" in r.json()["detail"]

    def chunks():
        for _ in range(40):
            yield b"x" * 50_000

    r = alice.http.post("/api/experiments", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413


def test_rate_limit_429_per_token(world):
    lab, alice, eve = world["lab"], world["alice"], world["eve"]
    saved = lab.service.limiter
    lab.service.limiter = RateLimiter(per_minute=30, burst=3)
    try:
        codes = [alice.http.get("/api/me").status_code for _ in range(6)]
        assert codes[:3] == [200, 200, 200] and 429 in codes[3:]
        r = alice.http.get("/api/me")
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        assert "rate limit" in r.json()["detail"]
        assert eve.http.get("/api/me").status_code == 200  # per token
    finally:
        lab.service.limiter = saved

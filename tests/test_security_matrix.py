"""The authorisation matrix: every endpoint of the OpenAPI schema (a test fails when one
is added without a row here) x every kind of caller x every kind and state of proposal,
over HTTP and the live stream, with rights that change while a stream is open.

Callers: ``anon`` (no token), ``member`` (bob, a member, not PI, of every target),
``outsider`` (a user with no proposals), ``partner`` (a member of an *approved*
proposal of coalition M), ``hopeful`` (a member of a pending, a rejected and a closed
proposal of coalition M: none of them may grant anything), ``scientist``, ``admin``.

Targets (alice is PI of each): proprietary, open (embargo passed), open (embargo to
come), coalition M, a closed proprietary one, a pending and a rejected proposal.

Outcomes are compared by class: ``ok`` (the caller was let through: 2xx, or 409/422
from the state of things), 401, 403, 404 (hidden). List endpoints also say whether the
target shows up.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import time
from typing import Any, Callable

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from sdl.client import Client
from sdl.service.testing import Lab, start_lab

XRD = {"A": 0.3, "B": 0.45, "C": 0.25, "temperature": 420.0}
ROLES = ("anon", "member", "outsider", "partner", "hopeful", "scientist", "admin")
KINDS = ("proprietary", "open_past", "open_future", "coalition", "closed", "pending", "rejected")
RUN = ("proprietary", "open_past", "open_future", "coalition", "closed")  # kinds with experiments and campaigns
OK = "ok"
STAFF = ("scientist", "admin")
_n = itertools.count()


def relation(role: str, kind: str) -> str:
    """What the caller is to the target: anon, member, reader (may read, not a member), none."""
    if role in ("anon", "member"):
        return role
    if kind == "open_past" or (kind == "coalition" and role == "partner"):
        return "reader"
    return "none"


def outcome(status: int) -> Any:
    return OK if status < 400 or status in (409, 422) else status


# ---------------------------------------------------------------- the world
def _proposal(lab: Lab, alice: Client, bob: Client, kind: str, **kw) -> dict:
    past = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=1)).isoformat()
    future = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=30)).isoformat()
    real = {"open_past": "open", "open_future": "open", "coalition": "coalition", "rejected": "coalition"}.get(
        kind, "proprietary")
    extra = {"coalition": "M"} if real == "coalition" else {}
    p = lab.proposal(alice, ["sim-xrd", "pool:p3ht"], kind=real, approve=False, members=[bob],
                     title=f"matrix {kind} {next(_n)}", **extra, **kw)
    if kind == "pending":
        return p
    if kind == "rejected":
        return lab.admin.post(f"/api/proposals/{p['id']}/reject", {})
    embargo = {"open_past": past, "open_future": future}.get(kind)
    return lab.admin.approve(p["id"], **({"embargo_until": embargo} if embargo else {}))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    # rates high enough for the matrix's own requests (the limits are tested in test_security_regressions)
    lab = start_lab(tmp_path_factory.mktemp("svc-matrix"), ("sim-xrd", "pool:p3ht"), rate_limit_per_minute=60_000,
                    rate_limit_burst=5_000, rate_limit_per_address_per_minute=120_000, rate_limit_address_burst=10_000)
    alice, bob = lab.user("mx-alice"), lab.user("mx-bob")
    who = {"anon": Client(lab.url, ""), "member": bob, "outsider": lab.user("mx-eve"),
           "partner": lab.user("mx-carol"), "hopeful": lab.user("mx-pat"),
           "scientist": lab.user("mx-sci", role="scientist"), "admin": lab.admin}
    lab.proposal(who["partner"], ["sim-xrd"], kind="coalition", coalition="M")
    hope = [who["hopeful"].create_proposal(f"hope {k}", ["sim-xrd"], kind="coalition", coalition="M")
            for k in ("pending", "rejected", "closed")]
    lab.admin.post(f"/api/proposals/{hope[1]['id']}/reject", {})
    lab.admin.approve(hope[2]["id"])
    lab.admin.post(f"/api/proposals/{hope[2]['id']}/close", {})
    targets: dict[str, dict] = {}
    for kind in KINDS:
        p = _proposal(lab, alice, bob, kind)
        t = {"proposal_id": p["id"]}
        if kind in RUN:
            item = alice.wait(alice.submit(p["id"], "sim-xrd", XRD)["id"])
            camp = alice.create_campaign(p["id"], {"instrument": "sim-xrd", "agent": "random", "budget": 1},
                                         start=True)
            camp = alice.wait_campaign(camp["id"], timeout=60)
            sug = alice.get(f"/api/campaigns/{camp['id']}/suggestions")[0]
            t.update(item_id=item["id"], uid=item["run_uid"], campaign_id=camp["id"], suggestion_id=sug["id"])
            if kind == "closed":
                lab.admin.post(f"/api/proposals/{p['id']}/close", {})
        targets[kind] = t
    yield dict(lab=lab, alice=alice, bob=bob, who=who, targets=targets, hope=hope)
    lab.close()
    lab.server.stop()


# ------------------------------------------------------------- expectations
def data(role, rel):
    return 401 if rel == "anon" else OK if rel in ("member", "reader") else 404


def members_act(role, rel):
    """Members may; those who may read but are not members get 403; the rest 404."""
    return 401 if rel == "anon" else OK if rel == "member" else 403 if rel == "reader" else 404


def members_or_staff(role, rel):
    if rel == "anon":
        return 401
    if rel == "member" or role in STAFF:
        return OK
    return 403 if rel == "reader" else 404


def members_run(role, rel):
    return 401 if rel == "anon" else OK if rel == "member" else 404


def proposal_read(role, rel):
    return 401 if rel == "anon" else OK if rel in ("member", "reader") or role == "admin" else 404


def proposal_audit(role, rel):
    if rel == "anon":
        return 401
    if rel == "member" or role == "admin":
        return OK
    return 403 if rel == "reader" else 404


def proposal_members(role, rel):  # the PI (alice) or an admin; bob is a member, not PI
    if rel == "anon":
        return 401
    if role == "admin":
        return OK
    return 403 if rel in ("member", "reader") else 404


def roles(*allowed: str, denied: int = 403) -> Callable:
    return lambda role, rel: 401 if role == "anon" else OK if role in allowed else denied


def signed_in(role, rel):
    return 401 if role == "anon" else OK


def everyone(status: Any) -> Callable:
    return lambda role, rel: status


def token_owner(role, rel):
    return 401 if role == "anon" else OK if role in ("member", "admin") else 404


def readable(role, rel):
    return rel in ("member", "reader")


class Row:
    def __init__(self, method: str, path: str, expect: Callable, body: dict | None = None, *,
                 kinds: tuple[str, ...] | None = KINDS, setup: Callable | None = None,
                 visible: tuple[str, Callable] | None = None, after: Callable | None = None):
        self.method, self.path, self.expect, self.body = method, path, expect, body
        self.kinds = kinds  # None: does not depend on a proposal (run once per caller)
        self.setup, self.visible, self.after = setup, visible, after

    def needs(self) -> set[str]:
        text = self.path + json.dumps(self.body or {})
        return {k for k in ("item_id", "uid", "campaign_id", "suggestion_id") if "{" + k + "}" in text}


def fresh(w, kind: str, role: str) -> dict:
    """A new proposal of ``kind`` for rows that change a proposal's state (admins would)."""
    return {"proposal_id": _proposal(w["lab"], w["alice"], w["bob"], kind)["id"]} if role == "admin" else {}


def bob_token(w, kind: str, role: str) -> dict:
    return {"token_id": w["bob"].create_token(f"matrix {next(_n)}")["id"]}


def dummy_member(w, kind: str, role: str) -> dict:
    name = f"mx-dummy-{next(_n)}"
    w["lab"].admin.create_user(name)
    w["lab"].admin.add_member(w["targets"][kind]["proposal_id"], name)
    return {"user": name}


def unknown(role, rel):
    return 401 if role == "anon" else 404


def no_such(w, kind, role) -> dict:
    return {"workflow_id": "wf-none", "sample_id": "sample-none", "campaign_id": "campaign-none"}


def resume(w) -> None:
    w["lab"].admin.resume("sim-xrd")


R = [
    Row("GET", "/health", everyone(OK), kinds=None),
    Row("GET", "/api/me", signed_in, kinds=None),
    Row("GET", "/api/users", roles(*STAFF), kinds=None),
    Row("POST", "/api/users", roles("admin"), {"name": "mx-new-{n}"}, kinds=None),
    Row("PATCH", "/api/users/{outsider_id}", roles("admin"), {"role": "user"}, kinds=None),
    Row("POST", "/api/users/{outsider_id}/identities", roles("admin"),
        {"subject": "s-{n}", "issuer": "https://idp.example.org"}, kinds=None),
    Row("POST", "/api/tokens", signed_in, {"name": "matrix"}, kinds=None),
    Row("GET", "/api/tokens", signed_in, kinds=None),
    Row("DELETE", "/api/tokens/{token_id}", token_owner, kinds=None, setup=bob_token),
    Row("POST", "/api/proposals", signed_in, {"title": "t", "instruments": ["sim-xrd"]}, kinds=None),
    Row("GET", "/api/proposals", signed_in,
        visible=("proposal_id", lambda role, rel: rel in ("member", "reader") or role == "admin")),
    Row("GET", "/api/proposals/{proposal_id}", proposal_read),
    Row("POST", "/api/proposals/{proposal_id}/approve", roles("admin"), {}, setup=fresh),
    Row("POST", "/api/proposals/{proposal_id}/reject", roles("admin"), {}, setup=fresh),
    Row("POST", "/api/proposals/{proposal_id}/close", roles("admin"), {}, setup=fresh),
    Row("POST", "/api/proposals/{proposal_id}/members", proposal_members, {"user": "mx-bob"}),
    Row("DELETE", "/api/proposals/{proposal_id}/members/{user}", proposal_members, setup=dummy_member),
    Row("GET", "/api/proposals/{proposal_id}/audit", proposal_audit),
    Row("GET", "/api/audit", roles("admin"), kinds=None),
    Row("GET", "/api/instruments", signed_in, kinds=None),
    Row("GET", "/api/instruments/{name}", signed_in, kinds=None),
    Row("GET", "/api/instruments/{name}/plans/{plan}", signed_in, kinds=None),
    Row("GET", "/api/instruments/{name}/pool", signed_in, kinds=None),
    Row("GET", "/api/instruments/{name}/queue", signed_in, kinds=None),
    Row("POST", "/api/instruments/{name}/pause", roles(*STAFF), {"immediate": False}, kinds=None, after=resume),
    Row("POST", "/api/instruments/{name}/resume", roles(*STAFF), {}, kinds=None),
    Row("POST", "/api/instruments/{name}/abort", roles(*STAFF), {}, kinds=None),
    Row("PUT", "/api/instruments/{name}/share", roles("admin"), {"dedicated_fraction": 0.0}, kinds=None),
    Row("POST", "/api/experiments", members_run,
        {"proposal_id": "{proposal_id}", "instrument": "sim-xrd", "parameters": XRD}),
    Row("GET", "/api/experiments", signed_in, kinds=RUN, visible=("item_id", readable)),
    Row("GET", "/api/experiments/{item_id}", data, kinds=RUN),
    Row("POST", "/api/experiments/{item_id}/cancel", members_or_staff, {}, kinds=RUN),
    Row("POST", "/api/experiments/{item_id}/abort", members_or_staff, {}, kinds=RUN),
    Row("GET", "/api/experiments/{item_id}/documents", data, kinds=RUN),
    Row("POST", "/api/campaigns", members_run,
        {"proposal_id": "{proposal_id}", "spec": {"instrument": "sim-xrd", "agent": "random", "budget": 1}}),
    Row("GET", "/api/campaigns", signed_in, kinds=RUN, visible=("campaign_id", readable)),
    Row("GET", "/api/campaigns/{campaign_id}", data, kinds=RUN),
    Row("POST", "/api/campaigns/{campaign_id}/start", members_act, {}, kinds=RUN),
    Row("POST", "/api/campaigns/{campaign_id}/pause", members_or_staff, {}, kinds=RUN),
    Row("POST", "/api/campaigns/{campaign_id}/resume", members_act, {}, kinds=RUN),
    Row("POST", "/api/campaigns/{campaign_id}/stop", members_or_staff, {}, kinds=RUN),
    Row("GET", "/api/campaigns/{campaign_id}/suggestions", data, kinds=RUN),
    Row("GET", "/api/campaigns/{campaign_id}/observations", data, kinds=RUN),
    Row("POST", "/api/campaigns/{campaign_id}/points", members_act, {"parameters": XRD}, kinds=RUN),
    Row("POST", "/api/campaigns/{campaign_id}/suggestions/{suggestion_id}/veto", members_act, {}, kinds=RUN),
    Row("GET", "/api/campaigns/{campaign_id}/table", data, kinds=RUN),
    Row("GET", "/api/campaigns/{campaign_id}/export", data, kinds=RUN),
    Row("GET", "/api/campaigns/{campaign_id}/rocrate", data, kinds=RUN),
    Row("GET", "/api/runs/{uid}", data, kinds=RUN),
    Row("GET", "/api/usage", signed_in, kinds=RUN,
        visible=("proposal_id", lambda role, rel: rel == "member" or role in STAFF)),
    Row("GET", "/api/usage/shares", roles(*STAFF, denied=404), kinds=None),
    Row("GET", "/api/usage/utilisation", roles(*STAFF, denied=404), kinds=None),
    Row("GET", "/api/agents", signed_in, kinds=None),
    # approve before run (sdl.service.webapi): members only; 409 where the campaign does not ask for it
    Row("POST", "/api/campaigns/{campaign_id}/suggestions/{suggestion_id}/approve", members_act, {}, kinds=RUN),
    # NeXus downloads (sdl.data_views): the same read rule as every other data endpoint
    Row("GET", "/api/runs/{uid}/nexus", data, kinds=RUN),
    Row("GET", "/api/campaigns/{campaign_id}/nexus", data, kinds=RUN),
    Row("GET", "/api/tiled", signed_in, kinds=None),  # where runs are also in Tiled (sdl.data_views)
    # workflows and samples (sdl.workflows): this world has no workflow stations, so these rows check
    # authentication, validation and unknown ids; reading another proposal's samples and workflows is
    # tested in tests/test_workflow_service.py
    Row("POST", "/api/workflows", signed_in, {}, kinds=None),
    Row("GET", "/api/workflows", signed_in, kinds=None),
    Row("GET", "/api/workflows/{workflow_id}", unknown, kinds=None, setup=no_such),
    Row("POST", "/api/workflows/{workflow_id}/cancel", unknown, {}, kinds=None, setup=no_such),
    Row("GET", "/api/samples", signed_in, kinds=None),
    Row("GET", "/api/samples/{sample_id}", unknown, kinds=None, setup=no_such),
    Row("POST", "/api/workflow-campaigns", signed_in, {}, kinds=None),
    Row("GET", "/api/workflow-campaigns/{campaign_id}", unknown, kinds=None, setup=no_such),
    Row("GET", "/api/workflow-campaigns/{campaign_id}/rocrate", unknown, kinds=None, setup=no_such),
    # sign-in is not configured in this world: the same answer for everyone (tests/test_oidc_signin.py
    # covers it against a real provider)
    Row("GET", "/api/auth/login", everyone(404), kinds=None),
    Row("GET", "/api/auth/callback?code=c&state=s", everyone(404), kinds=None),
    Row("POST", "/api/auth/token", everyone(404), {"id_token": "x" * 40}, kinds=None),
]


def _template(path: str) -> str:
    return path.split("?")[0]


def test_every_endpoint_of_the_schema_has_a_row(world):
    schema = world["lab"].server.app.openapi()
    endpoints = {(m.upper(), p) for p, ops in schema["paths"].items() for m in ops}
    named = {"{outsider_id}": "{user_id}"}
    rows = set()
    for r in R:
        path = _template(r.path)
        for a, b in named.items():
            path = path.replace(a, b)
        rows.add((r.method, path))
    assert endpoints - rows == set(), f"endpoints without a row in the security matrix: {sorted(endpoints - rows)}"
    assert rows - endpoints == set(), f"rows for endpoints that are gone: {sorted(rows - endpoints)}"


def _fill(obj: Any, subs: dict) -> Any:
    if isinstance(obj, str):
        for k, v in subs.items():
            obj = obj.replace("{" + k + "}", str(v))
        return obj
    if isinstance(obj, dict):
        return {k: _fill(v, subs) for k, v in obj.items()}
    return obj


@pytest.mark.parametrize("row", R, ids=[f"{r.method} {r.path}" for r in R])
def test_matrix(world, row: Row):
    w = world
    wrong: list[str] = []
    refused: list[tuple] = []
    start = w["lab"].admin.get("/api/audit", limit=1)[0]["id"]
    for kind in (row.kinds or (None,)):
        if kind is not None and row.needs() and kind not in RUN:
            continue
        for role in ROLES:
            rel = relation(role, kind) if kind else ("anon" if role == "anon" else "none")
            subs = {"n": next(_n), "name": "sim-xrd", "plan": "autonomous_step",
                    "outsider_id": w["who"]["outsider"].user["id"]}
            if row.path.endswith("/pool"):
                subs["name"] = "pool:p3ht"
            if kind is not None:
                subs.update(w["targets"][kind])
            if row.setup is not None:
                subs.update(row.setup(w, kind, role))
            c: Client = w["who"][role]
            r = c.http.request(row.method, _fill(row.path, subs),
                               json=None if row.body is None else _fill(row.body, subs))
            want = row.expect(role, rel)
            got = outcome(r.status_code)
            if row.method != "GET" and role != "anon" and got in (403, 404):
                refused.append((role, kind, "admin" if role == "admin" else c.user["name"],
                                {str(v) for v in subs.values()}))
            if got != want:
                wrong.append(f"{role} on {kind}: {r.status_code} (want {want}) {r.text[:160]}")
            elif r.status_code >= 400:
                body = r.json()
                if "error" not in body and "field" not in body:
                    wrong.append(f"{role} on {kind}: {r.status_code} without the error body: {r.text[:160]}")
            if row.visible is not None and got == OK and r.status_code == 200:
                key, should = row.visible
                shown = subs[key] in r.text
                if shown != should(role, rel):
                    wrong.append(f"{role} on {kind}: target {'shown' if shown else 'missing'} in the list")
            if row.after is not None and got == OK:
                row.after(w)
    # a refused request does nothing: no audit entry by that caller about that target
    audit = [a for a in w["lab"].admin.get("/api/audit", limit=5000) if a["id"] > start]
    for role, kind, actor, ids in refused:
        done = [a["action"] for a in audit if a["actor"] == actor
                and (kind is None or a["proposal_id"] in ids or a["target_id"] in ids)]
        if done:
            wrong.append(f"{role} on {kind}: refused, but did {done}")
    assert not wrong, "\n".join(wrong)


# ------------------------------------------------------------ the live stream
def _open(lab: Lab, token: str, **filters):
    url = Client(lab.url, token).stream_url(**filters)
    headers = {"Authorization": f"Bearer {token}"} if token else None
    return connect(url, additional_headers=headers, open_timeout=20)


def _first(conn, timeout: float = 10.0) -> tuple[dict | None, int | None]:
    try:
        return json.loads(conn.recv(timeout=timeout)), None
    except ConnectionClosed:
        return None, conn.close_code


def test_stream_matrix_campaign_streams(world):
    """Following a campaign: hello when its proposal is readable, 4404 otherwise, 4401 without a token."""
    wrong = []
    for kind in RUN:
        cid = world["targets"][kind]["campaign_id"]
        for role in ROLES:
            rel = relation(role, kind)
            token = world["who"][role].token or ""
            with _open(world["lab"], token, campaign_id=cid) as conn:
                first, _ = _first(conn)
                want = {"anon": "401", "none": "404"}.get(rel, "hello")
                got = "hello" if first and first["type"] == "hello" else str(first and first.get("status"))
                if got != want:
                    wrong.append(f"{role} on {kind}: {got} (want {want})")
    assert not wrong, "\n".join(wrong)


def _collect(conns: dict, until: Callable[[dict], bool], timeout: float = 20.0) -> dict[str, list]:
    got: dict[str, list] = {k: [] for k in conns}
    done: set = set()
    deadline = time.monotonic() + timeout
    while len(done) < len(conns) and time.monotonic() < deadline:
        for k, conn in conns.items():
            if k in done:
                continue
            try:
                ev = json.loads(conn.recv(timeout=0.05))
            except TimeoutError:
                continue
            except ConnectionClosed:
                done.add(k)
                continue
            got[k].append(ev)
            if until(ev):
                done.add(k)
    return got


def test_stream_matrix_documents_by_kind(world):
    """Every caller's stream gets the documents of exactly the proposals it may read."""
    lab, alice, targets = world["lab"], world["alice"], world["targets"]
    roles = [r for r in ROLES if r != "anon"]
    conns = {r: _open(lab, world["who"][r].token, types="document,queue") for r in roles}
    try:
        for conn in conns.values():
            assert json.loads(conn.recv(timeout=10))["type"] == "hello"
        live = [k for k in RUN if k != "closed"]
        items = {k: alice.submit(targets[k]["proposal_id"], "sim-xrd", XRD)["id"] for k in live}
        last = items[live[-1]]
        for i in items.values():
            alice.wait(i)
        got = _collect(conns, lambda e: e.get("type") == "queue" and e.get("item_id") == last
                       and e.get("status") == "done")
    finally:
        for conn in conns.values():
            conn.close()
    wrong = []
    for role in roles:
        for kind, item in items.items():
            docs = [e for e in got[role] if e["type"] == "document" and e.get("item_id") == item]
            queue = [e for e in got[role] if e["type"] == "queue" and e.get("item_id") == item]
            should = relation(role, kind) in ("member", "reader")
            if bool(docs) != should:
                wrong.append(f"{role} on {kind}: {len(docs)} documents (should see: {should})")
            if not should and (not queue or not all(e.get("redacted") for e in queue)):
                wrong.append(f"{role} on {kind}: queue events not redacted")
    assert not wrong, "\n".join(wrong)


def _docs_seen(lab, alice, conn, proposal_id: str) -> int:
    item = alice.submit(proposal_id, "sim-xrd", XRD)["id"]
    alice.wait(item)
    got = _collect({"c": conn}, lambda e: e.get("type") == "queue" and e.get("item_id") == item
                   and e.get("status") == "done")["c"]
    return len([e for e in got if e["type"] == "document" and e.get("item_id") == item])


def test_stream_follows_approval_and_closing_of_a_coalition_request(world):
    """A pending request to join coalition M grants nothing; approved mid-stream it does; closed, no more."""
    lab, alice, pat, targets = world["lab"], world["alice"], world["who"]["hopeful"], world["targets"]
    ask = pat.create_proposal("join M", ["sim-xrd"], kind="coalition", coalition="M")
    coal = targets["coalition"]["proposal_id"]
    with _open(lab, pat.token, types="document,queue") as conn:
        assert json.loads(conn.recv(timeout=10))["type"] == "hello"
        assert _docs_seen(lab, alice, conn, coal) == 0           # pending
        lab.admin.approve(ask["id"])
        assert _docs_seen(lab, alice, conn, coal) == 4           # approved: start, descriptor, event, stop
        lab.admin.post(f"/api/proposals/{ask['id']}/close", {})
        assert _docs_seen(lab, alice, conn, coal) == 0           # closed


def test_stream_follows_membership_and_revocation(world):
    lab, alice, bob = world["lab"], world["alice"], world["bob"]
    eve = world["who"]["outsider"]
    prop = _proposal(lab, alice, bob, "proprietary")
    extra = eve.create_token("matrix stream")
    with _open(lab, extra["token"], types="document,queue") as conn:
        assert json.loads(conn.recv(timeout=10))["type"] == "hello"
        assert _docs_seen(lab, alice, conn, prop["id"]) == 0
        alice.add_member(prop["id"], "mx-eve")
        assert _docs_seen(lab, alice, conn, prop["id"]) == 4
        alice.request("DELETE", f"/api/proposals/{prop['id']}/members/mx-eve")
        assert _docs_seen(lab, alice, conn, prop["id"]) == 0
        eve.revoke_token(extra["id"])
        try:
            while True:
                ev = json.loads(conn.recv(timeout=3))
                if ev.get("type") == "error":
                    assert ev["status"] == 401
        except ConnectionClosed:
            assert conn.close_code == 4401

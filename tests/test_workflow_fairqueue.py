"""One fair queue per instrument: plain experiments (the service's dispatcher) and workflow
tasks (the workflow engine) are chosen together, with one fair-share state, and workflow
tasks count against the proposal's experiment allocation (sdl.workflows.fairqueue)."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import select

from sdl.models import new_id
from sdl.service.db import InstrumentStateRow, ItemRow, MemberRow, ProposalRow, ServiceDB, UserRow
from sdl.service.dispatch import Dispatcher
from sdl.service.scheduler import FairState, usage
from sdl.testing import wait_until
from sdl.workflows.engine import Engine
from sdl.workflows.fairqueue import AllocationSpent
from sdl.workflows.stations import three_station_workflow

STATION = "sim-synth"
POINT = {"A": 0.2, "B": 0.3, "C": 0.5, "temperature": 500.0}


@pytest.fixture
def lab(store, store_url):
    db = ServiceDB(store_url)
    yield db, Dispatcher(db, lease_timeout_s=30, max_attempts=3), Engine(store, lease_s=30)
    db.close()


def proposal(db: ServiceDB, **kw) -> str:
    uid, pid = new_id(), new_id()[:16]
    with db.session() as s:
        s.add(UserRow(id=uid, name=f"u-{uid[:8]}", role="user"))
        s.flush()
        s.add(ProposalRow(id=pid, title="t", kind="open", pi_id=uid, status="approved",
                          instruments=["sim-synth", "sim-beamline", "sim-uvvis"], **kw))
        s.flush()
        s.add(MemberRow(proposal_id=pid, user_id=uid, role="pi"))
    return pid


def experiment(db: ServiceDB, pid: str, priority: int = 0) -> str:
    iid = new_id()
    with db.session() as s:
        s.add(ItemRow(id=iid, kind="experiment", instrument=STATION, plan="make", params=POINT, proposal_id=pid,
                      user_id="u", status="queued", priority=priority))
    return iid


def serve(disp: Dispatcher, eng: Engine, n: int) -> list[tuple[str, str]]:
    """Whoever asks first, ``n`` times: the plain worker, then the workflow worker; each unit is
    finished before the next claim. Returns (proposal, kind) in the order they were claimed."""
    order = []
    for _ in range(n):
        lease = disp.claim(STATION, "plain-worker")
        if lease is not None:
            assert eng.claim(STATION, "wf-worker") is None  # the instrument runs A's experiment
            order.append((lease.item.proposal_id, "experiment"))
            disp.finish(lease, "done", seconds=0.0)
            continue
        c = eng.claim(STATION, "wf-worker")
        assert c is not None, f"nothing to claim after {order}"
        assert disp.claim(STATION, "plain-worker") is None  # a workflow task holds the device
        order.append((c.task.proposal_id, "task"))
        eng.finish(c, ok=True, result={"made": 1.0})
    return order


def competing(lab, n: int, **workflow) -> tuple[str, str]:
    """Two proposals on one station: A with ``n`` plain experiments, B with ``n`` workflows."""
    db, disp, eng = lab
    disp.ensure_instrument(STATION)
    a, b = proposal(db), proposal(db)
    for _ in range(n):
        experiment(db, a)
    for _ in range(n):
        eng.submit(three_station_workflow(**workflow), POINT, proposal_id=b)
    return a, b


def test_experiments_and_workflow_tasks_share_one_fair_queue(lab):
    db, disp, eng = lab
    a, b = competing(lab, 4)
    # least used first: A waited longest, then they take turns (ties go to the one served longest ago)
    order = serve(disp, eng, 8)
    assert order == [(a, "experiment"), (b, "task")] * 4
    with db.read() as s:
        state = FairState.from_json(s.get(InstrumentStateRow, STATION).fair)
    assert state.served == 8 and state.charge == {a: 4.0, b: 4.0}
    assert disp.claim(STATION, "plain-worker") is None and eng.claim(STATION, "wf-worker") is None


def test_an_idle_workflow_proposal_cannot_bank_credit(lab):
    """B's workflows arrive after A has used the instrument: B is lifted to A's charge, so
    A is not starved (start-time fair queueing across both kinds)."""
    db, disp, eng = lab
    disp.ensure_instrument(STATION)
    a, b = proposal(db), proposal(db)
    for _ in range(6):
        experiment(db, a)
    assert serve(disp, eng, 3) == [(a, "experiment")] * 3
    for _ in range(3):
        eng.submit(three_station_workflow(), POINT, proposal_id=b)
    order = serve(disp, eng, 6)
    assert order.count((b, "task")) == 3 and order.count((a, "experiment")) == 3
    assert order[:2] in ([(a, "experiment"), (b, "task")], [(b, "task"), (a, "experiment")])
    assert all(x != y for x, y in zip(order, order[1:]))  # they take turns


def test_a_task_waiting_for_its_sample_does_not_hold_the_queue(lab):
    """A make that cannot start (the hotel is full) is no candidate: plain experiments go on."""
    db, disp, eng = lab
    disp.ensure_instrument(STATION)
    a, b = proposal(db), proposal(db)
    eng.submit(three_station_workflow(hotel_capacity=1), POINT, proposal_id=b)
    c = eng.claim(STATION, "wf-worker")
    eng.finish(c, ok=True, result={})  # the sample sits in the only hotel position
    eng.submit(three_station_workflow(hotel_capacity=1), POINT, proposal_id=b)
    experiment(db, a)
    experiment(db, a)
    assert serve(disp, eng, 2) == [(a, "experiment")] * 2


def test_paused_instrument_takes_neither_kind(lab):
    db, disp, eng = lab
    a, b = proposal(db), proposal(db)
    experiment(db, a)
    eng.submit(three_station_workflow(), POINT, proposal_id=b)
    disp.set_paused(STATION, True)
    assert disp.claim(STATION, "plain-worker") is None and eng.claim(STATION, "wf-worker") is None
    disp.set_paused(STATION, False)
    assert len(serve(disp, eng, 2)) == 2


def test_a_closed_proposals_tasks_wait_and_the_other_proposal_goes_on(lab):
    db, disp, eng = lab
    disp.ensure_instrument(STATION)
    a, b = proposal(db), proposal(db)
    eng.submit(three_station_workflow(), POINT, proposal_id=b)
    experiment(db, a)
    with db.session() as s:
        s.get(ProposalRow, b).status = "closed"
    assert eng.claim(STATION, "wf-worker") is None  # B may not run; the head is A's experiment
    assert serve(disp, eng, 1) == [(a, "experiment")]
    assert eng.claim(STATION, "wf-worker") is None


def test_a_proposal_out_of_hours_is_held_on_both_kinds(lab):
    import datetime as dt

    from sdl.service.db import UsageRow

    db, disp, eng = lab
    disp.ensure_instrument(STATION)
    a, b = proposal(db), proposal(db, allocation_hours=1.0)
    eng.submit(three_station_workflow(), POINT, proposal_id=b)
    experiment(db, b)
    experiment(db, a)
    now = dt.datetime.now(dt.timezone.utc)
    with db.session() as s:  # B has used its hour (on another instrument)
        s.add(UsageRow(proposal_id=b, instrument="sim-uvvis", item_id="x", kind="experiment", status="done",
                       started_at=now - dt.timedelta(hours=1), finished_at=now, seconds=3600.0))
    assert eng.claim(STATION, "wf-worker") is None  # B's task is held; the head is A's experiment
    assert serve(disp, eng, 1) == [(a, "experiment")]
    assert disp.claim(STATION, "plain-worker") is None and eng.claim(STATION, "wf-worker") is None


def test_workflow_tasks_are_charged_to_the_experiment_allocation(lab):
    db, disp, eng = lab
    b = proposal(db, allocation_experiments=7)
    w1 = eng.submit(three_station_workflow(), POINT, proposal_id=b)  # make, xrd, uvvis: 3 experiments
    w2 = eng.submit(three_station_workflow(), POINT, proposal_id=b)
    with db.read() as s:
        assert usage(s, [b])[b][0] == 6
    with pytest.raises(AllocationSpent, match="needs 3"):  # 6 + 3 > 7: refused before anything is stored
        eng.submit(three_station_workflow(), POINT, proposal_id=b)
    assert len(eng.workflows()) == 2
    # a plain experiment sees the same count (the service's check for submissions and campaign steps)
    experiment(db, b)
    with db.read() as s:
        assert usage(s, [b])[b][0] == 7
    # withdrawn before it ran: no longer counted; a task that ran stays counted
    c = eng.claim(STATION, "wf-worker")
    assert c.task.workflow_id == w1
    eng.finish(c, ok=True, result={})
    eng.cancel(w1)
    eng.cancel(w2)
    with db.read() as s:
        assert usage(s, [b])[b][0] == 1 + 1  # w1's make, and the plain experiment


def test_allocation_refuses_a_workflow_over_http(tmp_path):
    from sdl.client import ServiceError
    from sdl.service.testing import start_lab

    stations = ["sim-synth", "sim-beamline", "sim-uvvis"]
    lab = start_lab(tmp_path, instruments=[{"name": n, "external": True} for n in stations])
    try:
        alice = lab.user()
        prop = lab.proposal(alice, stations, allocation={"experiments": 4})
        body = {"proposal_id": prop["id"], "workflow": three_station_workflow(), "parameters": POINT}
        alice.post("/api/workflows", body)
        assert alice.get(f"/api/proposals/{prop['id']}")["usage"]["experiments"] == 3
        with pytest.raises(ServiceError) as e:
            alice.post("/api/workflows", body)
        assert e.value.status == 409 and "allocation of 4 experiments" in str(e.value)
        alice.post("/api/experiments", {"proposal_id": prop["id"], "instrument": "sim-synth",
                                        "parameters": POINT})  # the one experiment left
        with pytest.raises(ServiceError) as e:
            alice.post("/api/experiments", {"proposal_id": prop["id"], "instrument": "sim-synth",
                                            "parameters": POINT})
        assert e.value.status == 409
    finally:
        lab.server.stop()


def test_real_workers_alternate_on_one_station(tmp_path):
    """The service's own worker (plain experiments of A) and an ``sdl workflow worker``
    process (workflow tasks of B) on one station: it serves A, B, A, B..."""
    import subprocess

    from sdl.service.testing import start_lab
    from sdl.workflows.campaign import spawn_worker
    from sdl.workflows.tables import TaskRow

    lab = start_lab(tmp_path, instruments=[{"name": STATION}, {"name": "sim-beamline", "external": True},
                                           {"name": "sim-uvvis", "external": True}])
    worker = None
    try:
        alice, bob = lab.user(), lab.user()
        pa = lab.proposal(alice, [STATION])
        pb = lab.proposal(bob, [STATION, "sim-beamline", "sim-uvvis"])
        lab.admin.post(f"/api/instruments/{STATION}/pause", {"reason": "loading the queue"})
        for _ in range(4):
            alice.post("/api/experiments", {"proposal_id": pa["id"], "instrument": STATION, "parameters": POINT})
        for _ in range(4):
            bob.post("/api/workflows", {"proposal_id": pb["id"], "workflow": three_station_workflow(),
                                        "parameters": POINT})
        url = lab.service.settings.store_url
        worker = spawn_worker(url, STATION, lease_s=5.0, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        lab.admin.post(f"/api/instruments/{STATION}/resume", {"reason": "go"})
        store = lab.service.store

        def all_done():
            with store.session() as s:
                items = [(r.started_at, pa["id"]) for r in s.scalars(
                    select(ItemRow).where(ItemRow.status == "done"))]
                tasks = [(r.started_at, pb["id"]) for r in s.scalars(
                    select(TaskRow).where(TaskRow.instrument == STATION,
                                                                   TaskRow.status == "done"))]
            return (items, tasks) if len(items) == 4 and len(tasks) == 4 else None

        items, tasks = wait_until(all_done, 120, interval=0.3, what="four items and four tasks done")
        order = [p for _, p in sorted(items + tasks)]
        assert order == [pa["id"], pb["id"]] * 4
    finally:
        if worker is not None:
            worker.terminate()
            worker.wait(10)
        lab.server.stop()


def test_a_workflow_campaign_stops_when_the_allocation_is_spent(lab, store):
    from sdl.workflows.campaign import WorkflowCampaignRunner, create_workflow_campaign

    db, _, eng = lab
    b = proposal(db, allocation_experiments=7)  # room for two workflows of three instrument tasks
    cid = create_workflow_campaign(store, {"workflow": three_station_workflow(transit={"seconds": 0}),
                                           "budget": 5, "parallel": 1, "agent": "random", "proposal": b})
    assert WorkflowCampaignRunner(store, cid, lease_s=5).run("threads", timeout=120) == "stopped"
    row = store.campaign(cid)
    assert row.status == "stopped" and "allocation of 7 experiments" in row.message
    obs = store.observations(cid)
    assert len(obs) == 2 and all(o.ok for o in obs)  # the two that had room ran to the end
    assert len(eng.workflows(cid)) == 2 and eng.locks() == []


def test_concurrent_claimers_of_both_kinds_never_take_one_unit_twice(lab):
    """Four threads (two plain, two workflow claimers) race for one station's 16 units."""
    import threading

    from sdl.workflows.tables import TaskRow

    db, disp, eng = lab
    a, b = competing(lab, 8, hotel_capacity=16)
    taken: list[str] = []
    errors: list[BaseException] = []
    deadline = time.monotonic() + 60

    def plain(n: int) -> None:
        try:
            while time.monotonic() < deadline:  # by time, not tries: the other kind may hold the head
                lease = disp.claim(STATION, f"plain-{n}")
                if lease is not None:
                    taken.append(lease.id)
                    disp.finish(lease, "done", seconds=0.0)
                else:
                    time.sleep(0.002)
                if len(taken) >= 16:
                    return
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    def workflow(n: int) -> None:
        try:
            while time.monotonic() < deadline:
                c = eng.claim(STATION, f"wf-{n}")
                if c is not None:
                    taken.append(c.id)
                    eng.finish(c, ok=True, result={})
                else:
                    time.sleep(0.002)
                if len(taken) >= 16:
                    return
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=f, args=(i,)) for i in range(2) for f in (plain, workflow)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert len(taken) == 16 and len(set(taken)) == 16
    with db.read() as s:
        items = list(s.scalars(select(ItemRow)))
        state = FairState.from_json(s.get(InstrumentStateRow, STATION).fair)
    with eng.session() as s:
        tasks = list(s.scalars(select(TaskRow).where(TaskRow.instrument == STATION)))
    assert {r.attempts for r in items} == {1} and {t.attempts for t in tasks} == {1}
    assert state.served == 16 and state.charge == {a: 8.0, b: 8.0}
    # one kind at a time on the station: no experiment overlaps a task
    for it in items:
        for t in tasks:
            assert it.finished_at <= t.started_at or t.finished_at <= it.started_at, (it.id, t.id)

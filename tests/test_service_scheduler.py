"""The per-instrument queue: fair share between proposals, priority within one,
dedicated vs shared time, allocations; against a real server.

Each test pauses one instrument (no new items start), fills its queue, checks the
predicted order the queue endpoint shows, resumes, and checks the order things ran.
"""

from __future__ import annotations

import time

import pytest

from sdl.client import ServiceError
from sdl.service.scheduler import Candidate, FairState, choose
from sdl.service.testing import Lab, start_lab
from sdl.testing import wait_until

XRD = {"A": 0.3, "B": 0.45, "C": 0.25, "temperature": 420.0}


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    lab = start_lab(tmp_path_factory.mktemp("svc-sched"), ("sim-xrd", "pool:p3ht", "pool:agnp"))
    yield lab
    lab.close()
    lab.server.stop()


@pytest.fixture(scope="module")
def sci(lab: Lab):
    return lab.user("sched-scientist", role="scientist")


@pytest.fixture
def count_only(monkeypatch):
    """Charges of one per experiment only. Time used adds 1/60 per whole second an item ran,
    so on a busy machine (CI under `pytest -n 2`) one sim item that took a second makes its
    proposal's charge exceed the other's and reorders the queue the test predicted before
    anything ran. The tests that compare the order things ran with that prediction are about
    the per-experiment round robin, which is what they keep."""
    monkeypatch.setattr("sdl.service.scheduler.CHARGE_PER_MINUTE", 0.0)  # read at each charge


def _ran_order(owners, instrument) -> list[str]:
    """Proposal ids in the order their items started (read by each proposal's own member)."""
    items = []
    for client, pid in owners:
        items += [x for x in client.experiments(proposal_id=pid, instrument=instrument, limit=500)]
    items = [x for x in items if x["started_at"]]
    return [x["proposal_id"] for x in sorted(items, key=lambda x: x["started_at"])]


def test_round_robin_between_proposals(lab: Lab, sci, count_only):
    a, b = lab.user("rr-a"), lab.user("rr-b")
    pa, pb = lab.proposal(a, ["sim-xrd"]), lab.proposal(b, ["sim-xrd"])
    sci.pause("sim-xrd", immediate=False)
    try:
        for _ in range(6):
            a.submit(pa["id"], "sim-xrd", XRD)
        for _ in range(3):
            b.submit(pb["id"], "sim-xrd", XRD)
        q = sci.queue("sim-xrd")
        # staff see whose item it is, not what it is
        assert all(x["redacted"] and "parameters" not in x for x in q)
        order = [x["proposal_id"] for x in q]
        A, B = pa["id"], pb["id"]
        assert order == [A, B, A, B, A, B, A, A, A]
        # each member sees their own items in full, the other's redacted
        qa = a.queue("sim-xrd")
        assert all(("parameters" in x) == (x.get("proposal_id") == A) for x in qa)
    finally:
        sci.resume("sim-xrd")
    wait_until(lambda: not sci.queue("sim-xrd"), 30, interval=0.05, what="sim-xrd queue empty")
    assert _ran_order([(a, pa["id"]), (b, pb["id"])], "sim-xrd") == order


def test_idle_proposal_cannot_bank_credit(lab: Lab, sci, count_only):
    """A proposal that used the instrument alone is not starved afterwards by a newcomer."""
    a, b = lab.user("bank-a"), lab.user("bank-b")
    pa, pb = lab.proposal(a, ["pool:p3ht"]), lab.proposal(b, ["pool:p3ht"])
    point = a.get("/api/instruments/pool:p3ht/pool")[0]
    items = [a.submit(pa["id"], "pool:p3ht", point) for _ in range(5)]
    for it in items:
        a.wait(it["id"])
    sci.pause("pool:p3ht", immediate=False)
    try:
        for _ in range(3):
            a.submit(pa["id"], "pool:p3ht", point)
        for _ in range(3):
            b.submit(pb["id"], "pool:p3ht", point)
        order = [x["proposal_id"] for x in sci.queue("pool:p3ht")]
    finally:
        sci.resume("pool:p3ht")
    A, B = pa["id"], pb["id"]
    assert order == [B, A, B, A, B, A]
    wait_until(lambda: not sci.queue("pool:p3ht"), 30, interval=0.05, what="pool:p3ht queue empty")
    assert _ran_order([(a, A), (b, B)], "pool:p3ht")[5:] == order


def test_priority_orders_within_a_proposal_only(lab: Lab, sci):
    a, b = lab.user("prio-a"), lab.user("prio-b")
    pa, pb = lab.proposal(a, ["sim-xrd"]), lab.proposal(b, ["sim-xrd"])
    sci.pause("sim-xrd", immediate=False)
    try:
        low = [a.submit(pa["id"], "sim-xrd", XRD, priority=0) for _ in range(2)]
        b_items = [b.submit(pb["id"], "sim-xrd", XRD, priority=-5) for _ in range(2)]
        urgent = a.submit(pa["id"], "sim-xrd", XRD, priority=10)
        ids = [x["id"] for x in sci.queue("sim-xrd")]
    finally:
        sci.resume("sim-xrd")
    # a's urgent item jumps a's own queue, but b still gets every other turn
    assert ids[0] == urgent["id"] or ids[1] == urgent["id"]
    a_ids = [i for i in ids if i in {x["id"] for x in low + [urgent]}]
    assert a_ids == [urgent["id"], low[0]["id"], low[1]["id"]]
    b_pos = [ids.index(x["id"]) for x in b_items]
    assert b_pos[0] <= 1 and b_pos[1] <= 3
    wait_until(lambda: not sci.queue("sim-xrd"), 30, interval=0.05, what="sim-xrd queue empty")


def test_dedicated_fraction(lab: Lab, sci):
    staff, guest = lab.user("ded-staff"), lab.user("ded-guest")
    pd = lab.proposal(staff, ["pool:agnp"], approve=False)
    pd = lab.admin.approve(pd["id"], dedicated=True)
    assert pd["dedicated"] is True
    ps = lab.proposal(guest, ["pool:agnp"])
    with pytest.raises(ServiceError) as e:
        sci.request("PUT", "/api/instruments/pool:agnp/share", json={"dedicated_fraction": 0.25})
    assert e.value.status == 403
    lab.admin.request("PUT", "/api/instruments/pool:agnp/share", json={"dedicated_fraction": 0.25})
    point = staff.get("/api/instruments/pool:agnp/pool")[0]
    sci.pause("pool:agnp", immediate=False)
    try:
        for _ in range(8):
            staff.submit(pd["id"], "pool:agnp", point)
        for _ in range(8):
            guest.submit(ps["id"], "pool:agnp", point)
        order = [x["proposal_id"] for x in sci.queue("pool:agnp")]
    finally:
        sci.resume("pool:agnp")
    # 25 % dedicated while both pools have work; then the dedicated pool gets what is left
    assert "".join("D" if x == pd["id"] else "S" for x in order) == "DSSSDSSSDSSDDDDD"
    wait_until(lambda: not sci.queue("pool:agnp"), 30, interval=0.05, what="pool:agnp queue empty")
    ran = _ran_order([(staff, pd["id"]), (guest, ps["id"])], "pool:agnp")
    assert 1 <= ran[:8].count(pd["id"]) <= 3
    # the queue empties when the last experiment starts; its usage is written when it ends
    def usage_written():
        shares = lab.admin.get("/api/usage/shares")["pool:agnp"]
        return shares if shares["dedicated_experiments"] + shares["shared_experiments"] >= 16 else None

    shares = wait_until(usage_written, 30, interval=0.05, what="the usage of all 16 experiments")
    assert shares["dedicated_experiments"] == 8 and shares["shared_experiments"] == 8
    assert shares["dedicated_fraction_target"] == 0.25


def test_allocations(lab: Lab, sci):
    a = lab.user("alloc-a")
    p = lab.proposal(a, ["sim-xrd"], allocation={"experiments": 2})
    for _ in range(2):
        a.submit(p["id"], "sim-xrd", XRD)
    with pytest.raises(ServiceError) as e:
        a.submit(p["id"], "sim-xrd", XRD)
    assert e.value.status == 409 and "allocation" in e.value.message
    hp = lab.proposal(a, ["sim-xrd"], allocation={"hours": 1e-9})
    sci.pause("sim-xrd", immediate=False)
    first = a.submit(hp["id"], "sim-xrd", XRD)
    second = a.submit(hp["id"], "sim-xrd", XRD)
    sci.resume("sim-xrd")
    assert a.wait(first["id"])["status"] == "done"
    time.sleep(0.3)
    assert a.experiment(second["id"])["status"] == "queued"  # its hours are spent: held
    held = [x for x in a.queue("sim-xrd") if x["id"] == second["id"]]
    assert held and held[0]["blocked"] is True
    with pytest.raises(ServiceError) as e:
        a.submit(hp["id"], "sim-xrd", XRD)
    assert e.value.status == 409 and "hours" in e.value.message
    a.cancel(second["id"])


def test_choose_unit():
    """The choice itself: least charge first, ties to the one served longest ago."""
    st = FairState()
    cands = {p: Candidate(p, False, i) for i, p in enumerate("xyz")}
    picks = []
    for _ in range(6):
        p = choose(st, cands, 0.0)
        st.charge[p] = st.charge.get(p, 0) + 1
        st.last_served[p] = len(picks) + 1
        picks.append(p)
    assert picks == list("xyzxyz")

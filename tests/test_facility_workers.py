"""Instruments served by ``sdl worker`` processes (issue 6): live events reach every
service replica (PostgreSQL LISTEN/NOTIFY, or polling on SQLite), two worker processes
share one fair queue, abort and pause reach a worker process through the store, and
the NOTIFY payload stays within PostgreSQL's limit.

Real processes on a SQLite file, or on PostgreSQL with ``SDL_TEST_DATABASE_URL`` set.
"""

from __future__ import annotations

import json
import time

import pytest

from sdl.database import drop_scratch_store, scratch_store_url
from sdl.service import crashtest
from sdl.service.relay import MAX_PAYLOAD, encode
from sdl.service.server import LiveServer
from sdl.service.settings import InstrumentConfig
from sdl.service.testing import Lab, collect_events, scratch_settings
from sdl.testing import wait_until

XRD = crashtest.XRD
POOL = "pool:p3ht"


@pytest.fixture(scope="module")
def facility(tmp_path_factory):
    folder = tmp_path_factory.mktemp("facility")
    url = scratch_store_url(folder / "store.sqlite")
    cfgs = [InstrumentConfig(name="sim-xrd", external=True), InstrumentConfig(name=POOL, external=True)]
    st = scratch_settings(folder, cfgs, heartbeat_s=0.3, lease_timeout_s=3.0, event_poll_s=0.1)
    st = st.model_copy(update={"store_url": url})
    main = Lab(LiveServer(st).start())
    replica = LiveServer(st.model_copy(update={"start_workers": False})).start()  # API only
    # documents over 1000 bytes travel by id (PostgreSQL): the replicas read them from the store
    workers = [crashtest.start_worker(folder, url, "sim-xrd", time_scale=0.005, worker_id="t-xrd",
                                      env={"SDL_NOTIFY_INLINE_BYTES": "1000"}),
               # about 0.3 s per pool experiment: long enough that the second worker, waking from
               # its pause wait, finds items left (instant runs let one worker take all nine)
               crashtest.start_worker(folder, url, POOL, time_scale=0.003, worker_id="t-pool-1"),
               crashtest.start_worker(folder, url, POOL, time_scale=0.003, worker_id="t-pool-2")]
    try:
        crashtest.wait_for(lambda: all(
            (r := main.service.dispatcher.workers()) and {w.id for w in r if w.state == "idle"} >=
            {"t-xrd", "t-pool-1", "t-pool-2"} for _ in [0]), 90, "three idle workers", workers, poll=0.2)
        yield main, replica, workers
    finally:
        for w in workers:
            w.terminate(20)
            w.close()
        replica.stop()
        main.close()
        main.server.stop()
        drop_scratch_store(folder / "store.sqlite")


def test_every_replica_streams_a_worker_process_run(facility):
    from sdl.client import Client

    main, replica, workers = facility
    alice = main.user("stream-alice")
    prop = main.proposal(alice, ["sim-xrd", POOL])
    on_replica = Client(replica.url, alice.token)
    box: dict = {}

    def end(e):
        return e["type"] == "queue" and e["status"] == "done" and e["item_id"] == box.get("id")
    t1, ev_main = collect_events(alice, end, instrument="sim-xrd", types="document,queue")
    t2, ev_rep = collect_events(on_replica, end, instrument="sim-xrd", types="document,queue")
    box["id"] = alice.submit(prop["id"], "sim-xrd", XRD)["id"]
    t1.join(60)
    t2.join(60)
    for events in (ev_main, ev_rep):
        docs = [e for e in events if e["type"] == "document" and e["item_id"] == box["id"]]
        assert [d["name"] for d in docs] == ["start", "descriptor", "event", "stop"], events
        assert len(docs[2]["doc"]["data"]["detector_spectrum"]) > 100  # the pattern itself, live
        # exactly the stored documents (on PostgreSQL the big ones were read back by id)
        assert [d["doc"] for d in docs] == [d["doc"] for d in alice.documents(box["id"])]
        assert docs[0]["doc"]["worker"] == "t-xrd"
        statuses = [e["status"] for e in events if e["type"] == "queue" and e["item_id"] == box["id"]]
        assert statuses[-2:] == ["running", "done"]
    status = alice.instrument("sim-xrd")["status"]
    assert status["external"] is True and status["workers"][0]["id"] == "t-xrd"
    assert status["devices"] == {"shutter": "closed"}


def test_two_worker_processes_share_one_fair_queue(facility):
    main, _replica, _workers = facility
    a, b = main.user("fair-a"), main.user("fair-b")
    sci = main.user("fair-sci", role="scientist")
    pa, pb = main.proposal(a, [POOL]), main.proposal(b, [POOL])
    point = a.get(f"/api/instruments/{POOL}/pool")[0]
    sci.pause(POOL, immediate=False)  # stored: no worker process claims from now on
    try:
        for _ in range(6):
            a.submit(pa["id"], POOL, point)
        for _ in range(3):
            b.submit(pb["id"], POOL, point)
        time.sleep(1.0)
        assert all(x["status"] == "queued" for x in a.experiments(proposal_id=pa["id"]))
        order = [x["proposal_id"] for x in sci.queue(POOL)]
        A, B = pa["id"], pb["id"]
        assert order == [A, B, A, B, A, B, A, A, A]
    finally:
        sci.resume(POOL)

    def all_done():
        items = (a.experiments(proposal_id=A, limit=50) + b.experiments(proposal_id=B, limit=50))
        return items if all(x["status"] == "done" for x in items) and len(items) == 9 else None

    items = wait_until(all_done, 60, interval=0.2, what="all nine experiments done")
    ran = [x["proposal_id"] for x in sorted(items, key=lambda x: x["started_at"])]
    assert ran == order  # claimed in the fair order, by two processes
    with main.service.db.read() as s:
        from sqlalchemy import select

        from sdl.service.db import ItemRow

        by = set(s.scalars(select(ItemRow.worker).where(ItemRow.proposal_id.in_([A, B]))))
    assert by == {"t-pool-1", "t-pool-2"}  # both workers took part


def test_abort_reaches_a_worker_process(facility):
    main, _replica, _workers = facility
    alice = main.user("abort-alice")
    sci = main.user("abort-sci", role="scientist")
    prop = main.proposal(alice, ["sim-xrd"])
    item = alice.submit(prop["id"], "sim-xrd", {**XRD, "exposure": 3000.0})  # 15 s at time scale 0.005
    wait_until(lambda: alice.experiment(item["id"])["status"] == "running", 30, interval=0.05, what="the item running")
    out = sci.abort(item["id"], reason="wrong sample")
    assert out["status"] == "aborted"
    done = alice.experiment(item["id"])
    assert done["error"] == "wrong sample"
    run = alice.get(f"/api/runs/{done['run_uid']}")
    assert run["status"] == "aborted" and run["documents"][-1]["doc"]["exit_status"] == "abort"


def test_notify_payload_stays_under_the_limit():
    big = {"type": "document", "name": "event", "item_id": "x", "doc": {"data": {"s": list(range(5000))}}}
    text = encode(big, "p", "origin", doc_id=42)
    assert len(text.encode()) <= MAX_PAYLOAD
    env = json.loads(text)
    assert env["d"] == 42 and "doc" not in env["e"] and env["e"]["name"] == "event"
    assert len(encode(big, "p", "o")) <= MAX_PAYLOAD  # not a document: truncated, never too long
    small = {"type": "document", "name": "start", "doc": {"uid": "u"}}
    env = json.loads(encode(small, "p", "o", doc_id=1))
    assert env["e"]["doc"] == {"uid": "u"}  # inline when it fits
    huge = {"type": "campaign", "event": "observation", "campaign_id": "c", "blob": "x" * 20000}
    env = json.loads(encode(huge, "p", "o"))
    assert env["e"]["truncated"] is True and env["e"]["campaign_id"] == "c"

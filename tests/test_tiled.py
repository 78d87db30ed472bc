"""Runs in Tiled: a real Tiled server (from PyPI) as a child process on loopback,
fed from the store by bluesky's TiledWriter; every run read back through
``tiled.client`` equals the store's documents; a Tiled server killed mid-campaign
loses nothing; sdl's read rules hold inside Tiled (members, open after the embargo)."""

from __future__ import annotations

import datetime as dt
import threading
import time

import httpx
import numpy as np
import pytest

pytest.importorskip("tiled.server")
pytest.importorskip("bluesky_tiled_plugins")

from tiled.queries import Key  # noqa: E402

from sdl.campaign import CampaignRunner, Progress, create_campaign  # noqa: E402
from sdl.data_views.tiled_access import login  # noqa: E402
from sdl.data_views.tiled_feed import TiledFeed  # noqa: E402
from sdl.data_views.tiled_server import EmbeddedTiled  # noqa: E402
from sdl.store import Store  # noqa: E402
from sdl.testing import wait_until  # noqa: E402

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """One store and one embedded Tiled server for the tests of this module that feed it
    (a Tiled server takes seconds to start): each test makes its own campaign."""
    from sdl.database import drop_scratch_store, scratch_store_url

    folder = tmp_path_factory.mktemp("tiled-shared")
    url = scratch_store_url(folder / "store.sqlite")
    store = Store(url)
    server = EmbeddedTiled(folder / "tiled", url).start()
    yield store, server
    server.stop()
    store.close()
    drop_scratch_store(folder / "store.sqlite")


def assert_same_as_store(client, store: Store, uid: str) -> None:
    """The run in Tiled holds the store's start and stop documents and every event's data."""
    docs = store.documents(uid)
    run = client[uid]
    start = docs[0][1]
    md = run.metadata
    assert {k: v for k, v in md["start"].items()} == start
    stop = next((d for n, d in docs if n == "stop"), None)
    if stop is not None:
        assert md["stop"] == stop
    for desc in (d for n, d in docs if n == "descriptor"):
        events = [d for n, d in docs if n == "event" and d["descriptor"] == desc["uid"]]
        if not events:
            continue
        stream = run[desc["name"]]
        assert list(np.asarray(stream["seq_num"].read())) == [e["seq_num"] for e in events]
        for key in desc["data_keys"]:
            want = np.asarray([e["data"][key] for e in events], dtype=float)
            got = np.asarray(stream[key].read(), dtype=float).reshape(want.shape)
            np.testing.assert_allclose(got, want)


class _Outage(Progress):
    """Kill the Tiled server after ``down_at`` experiments; bring it back (in a thread,
    the campaign does not wait) after ``up_at``."""

    def __init__(self, server: EmbeddedTiled, down_at: int, up_at: int, feed: TiledFeed | None = None):
        self.server, self.down_at, self.up_at, self.feed = server, down_at, up_at, feed
        self.down: float | None = None
        self.up: float | None = None
        self.thread: threading.Thread | None = None

    def experiment_done(self, done, total, observation, best) -> None:
        if done == self.down_at:
            self.server.kill()
            self.down = time.time()
        elif done == self.up_at:
            def back() -> None:
                # back only once the feed has met the outage (on a loaded machine its thread may
                # not have tried yet): the test is about catching up, so the outage must be seen
                deadline = time.time() + 60
                while self.feed is not None and self.feed.outages < 1 and time.time() < deadline:
                    time.sleep(0.05)
                self.server.start()
                self.up = time.time()

            self.thread = threading.Thread(target=back, daemon=True)
            self.thread.start()


def test_campaign_reaches_tiled_through_an_outage(shared):
    store, server = shared
    feed = TiledFeed(store, server.feed_login, ping=server.alive, poll_s=0.1, backoff_max_s=0.5).start()
    try:
        cid = create_campaign(store, {"instrument": "sim-xrd", "agent": "sobol", "budget": 6})
        outage = _Outage(server, down_at=2, up_at=4, feed=feed)
        assert CampaignRunner(store, cid, progress=outage).run() == "completed"
        finished_at = time.time()
        outage.thread.join(60)
        assert outage.up is not None, "the Tiled server did not come back"
        # the campaign went on while Tiled was down: runs 3 and 4 ended in the outage
        runs = store.runs(cid)
        assert len(runs) == 6 and all(r.status == "success" for r in runs)
        during = [r for r in runs if outage.down <= r.finished_at.timestamp() <= (outage.up or finished_at)]
        assert len(during) >= 2
        assert feed.outages >= 1
        assert feed.wait_caught_up(90), feed.status()

        client = server.feed_login()
        found = client.search(Key("sdl.campaign_id") == cid)
        assert sorted(found.keys()) == sorted(r.uid for r in runs)
        for r in runs:
            assert_same_as_store(client, store, r.uid)
            sdl_md = client[r.uid].metadata["sdl"]
            assert sdl_md["complete"] and sdl_md["run_status"] == "success"
            assert sdl_md["suggestion_id"] == r.suggestion_id
        # searchable by suggestion and sample too; bluesky's client classes read them
        one = runs[0]
        sample = store.documents(one.uid)[0][1]["sample_id"]
        assert list(client.search(Key("sdl.suggestion_id") == one.suggestion_id).keys()) == [one.uid]
        assert list(client.search(Key("sdl.sample_id") == sample).keys()) == [one.uid]
        assert type(client[one.uid]).__name__.startswith("BlueskyRun")
    finally:
        feed.stop()
        if not server.alive():
            server.start()


def test_a_half_written_run_is_rewritten_and_a_refused_one_holds_up_nothing(shared):
    """The connection broke in the middle of a run: the next connection rewrites it whole.
    A run the server keeps refusing is skipped after max_attempts; the others go on."""
    store, server = shared
    cid = create_campaign(store, {"instrument": "sim-xrd", "agent": "sobol", "budget": 3})
    assert CampaignRunner(store, cid).run() == "completed"
    half, refused, fine = (r.uid for r in store.runs(cid))
    client = server.feed_login()
    start = dict(store.documents(half)[0][1])
    client.create_container(key=half, metadata={"start": start}, access_tags=["sdl:no-proposal"])

    class Refusing(TiledFeed):
        def send(self, uid):
            if uid == refused:
                raise ValueError("the server refused this run")
            return super().send(uid)

    feed = Refusing(store, server.feed_login, ping=server.alive, poll_s=0.1, backoff_max_s=0.2).start()
    try:
        assert feed.wait_caught_up(60), feed.status()
        status = feed.status()
    finally:
        feed.stop()
    assert feed.attempts[refused] == 3 and "refused this run" in status["refused"][refused]
    client = server.feed_login()
    for uid in (half, fine):
        assert_same_as_store(client, store, uid)
    assert refused not in client


def test_tiled_follows_sdl_read_rules(tmp_path):
    """A proprietary proposal's runs are its members' only; an open one's its members'
    until the embargo ends and everyone's after; a wrong token does not log in;
    anonymous sees nothing; nobody but the feed writes."""
    from sdl.service.testing import start_lab

    lab = start_lab(tmp_path, ("sim-xrd",), tiled=True, tiled_folder=str(tmp_path / "tiled"))
    try:
        views = lab.service.data_views
        assert views is not None and views.server is not None
        url = views.url
        alice, bob, carol = lab.user("alice-t"), lab.user("bob-t"), lab.user("carol-t")
        secret = lab.proposal(alice, ["sim-xrd"])  # proprietary
        past = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=1)).isoformat()
        public = carol.create_proposal("open one", ["sim-xrd"], kind="open")
        lab.admin.approve(public["id"], embargo_until=past)
        future = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=30)).isoformat()
        embargoed = carol.create_proposal("open, under embargo", ["sim-xrd"], kind="open")
        lab.admin.approve(embargoed["id"], embargo_until=future)
        runs: dict[str, list[str]] = {}
        for who, prop, n in ((alice, secret, 2), (carol, public, 2), (carol, embargoed, 1)):
            camp = who.create_campaign(prop["id"], {"instrument": "sim-xrd", "agent": "sobol", "budget": n},
                                       start=True)
            assert who.wait_campaign(camp["id"], timeout=120)["state"] == "completed"
            runs[prop["id"]] = [r["uid"] for r in who.export(camp["id"])["runs"]]
        assert views.feed.wait_caught_up(60), views.feed.status()

        info = alice.get("/api/tiled")
        assert info["enabled"] and info["url"] == url and info["embedded"] and "feed" not in info
        assert lab.admin.get("/api/tiled")["feed"]["connected"] is True
        a = login(url, "alice-t", alice.token)
        mine = sorted(a.search(Key("sdl.proposal_id") == secret["id"]).keys())
        assert mine == sorted(runs[secret["id"]])
        assert_same_as_store(a, lab.service.store, mine[0])
        # bob is not a member: the runs are not listed, and asking by uid is refused
        b = login(url, "bob-t", bob.token)
        assert set(b.keys()).isdisjoint(runs[secret["id"]])
        with pytest.raises(KeyError):
            b[runs[secret["id"]][0]]
        # an open proposal under embargo: its members only
        assert set(b.keys()).isdisjoint(runs[embargoed["id"]])
        c = login(url, "carol-t", carol.token)
        assert sorted(c.search(Key("sdl.proposal_id") == embargoed["id"]).keys()) == sorted(runs[embargoed["id"]])
        # the open proposal's embargo has passed: bob reads it
        assert sorted(b.search(Key("sdl.proposal_id") == public["id"]).keys()) == sorted(runs[public["id"]])
        assert b[runs[public["id"]][0]]["primary"].read() is not None
        # membership is looked up live: once bob joins, he reads alice's runs
        alice.add_member(secret["id"], "bob-t")
        wait_until(lambda: runs[secret["id"]][0] in set(b.keys()), 10, interval=0.5, what="alice's run visible to bob")
        # no login with someone else's token; nothing for anonymous callers
        with pytest.raises(httpx.HTTPStatusError):
            login(url, "bob-t", alice.token)
        assert httpx.get(f"{url}/api/v1/search/").status_code in (401, 403)
        # nobody but the feed writes
        with pytest.raises(Exception):
            a.create_container(key="mine")
    finally:
        lab.close()
        lab.server.stop()


def test_settings_take_one_tiled_or_the_other():
    from sdl.errors import InvalidInput
    from sdl.service.settings import load_settings

    with pytest.raises(InvalidInput) as info:
        load_settings(None, tiled=True, tiled_url="http://127.0.0.1:1")
    assert "tiled" in str(info.value) and "not both" in str(info.value)
    assert load_settings(None).tiled is False and load_settings(None).tiled_url is None


def test_feeds_an_existing_tiled_server_with_an_api_key(tmp_path, store_url):
    """--tiled-url: a facility's server (here `tiled serve catalog` with one API key)."""
    import subprocess
    import sys
    from types import SimpleNamespace

    from sdl.data_views.service_hook import start_data_views
    from sdl.data_views.tiled_server import free_port
    from sdl.service.settings import ServiceSettings

    store = Store(store_url)
    cid = create_campaign(store, {"instrument": "sim-xrd", "agent": "sobol", "budget": 2})
    assert CampaignRunner(store, cid).run() == "completed"
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tiled", "serve", "catalog", "--temp", "--api-key", "k3y",
                             "--host", "127.0.0.1", "--port", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, cwd=tmp_path)
    views = None
    try:
        url = f"http://127.0.0.1:{port}"
        settings = ServiceSettings(store_url=store_url, instruments=[], tiled_url=url, tiled_api_key="k3y")
        svc = SimpleNamespace(settings=settings, store=store, _run_proposal=lambda uid: "P-ext")
        views = start_data_views(svc)  # the feed waits for the server: it is not up yet
        assert views.server is None and views.url == url
        assert views.feed.wait_caught_up(120), views.feed.status()
        from tiled.client import from_uri

        client = from_uri(url, api_key="k3y", remember_me=False)
        for r in store.runs(cid):
            assert_same_as_store(client, store, r.uid)
            assert client[r.uid].metadata["sdl"]["proposal_id"] == "P-ext"
    finally:
        if views is not None:
            views.stop()
        proc.terminate()
        proc.wait(20)
        store.close()


# ------------------------------------------------- a bluesky-adaptive agent on Tiled
def test_bluesky_adaptive_agent_learns_from_tiled(shared, monkeypatch):
    """bluesky-adaptive's own Ax optimizer and an evaluation function reading runs from
    Tiled drive an sdl campaign: the agent learns from Tiled, not from sdl's store, and
    what it learns equals what the store recorded."""
    pytest.importorskip("bluesky_adaptive")
    import sdl.agents
    from sdl.data_views.adaptive import AdaptiveAgent, TiledEvaluation, ax_optimizer

    store, server = shared
    feed = TiledFeed(store, server.feed_login, ping=server.alive, poll_s=0.1).start()
    made: list[AdaptiveAgent] = []

    def factory(space, objectives, seed=0, **options):
        evaluation = TiledEvaluation(server.feed_login(), timeout_s=60)
        agent = AdaptiveAgent(space, objectives, ax_optimizer(space, objectives, seed), evaluation,
                              name="adaptive-tiled")
        made.append(agent)
        return agent

    monkeypatch.setitem(sdl.agents.AGENTS, "adaptive-tiled", factory)
    try:
        cid = create_campaign(store, {"instrument": "sim-xrd", "agent": "adaptive-tiled", "budget": 4})
        assert CampaignRunner(store, cid).run() == "completed"
    finally:
        feed.stop()
    agent = made[-1]
    obs = store.observations(cid)
    assert len(obs) == 4 and all(o.ok for o in obs)
    # every observation was read back from Tiled and reduced there, to the store's value
    assert agent.evaluation.reads == [o.run_uid for o in obs]
    by_run = {p["run_uid"]: p for p in agent.ingested}
    for o in obs:
        assert by_run[o.run_uid]["fom"] == pytest.approx(o.values["fom"], rel=1e-12)
    # the points were the optimizer's own, and its best is the campaign's best
    sugs = store.suggestions(cid)
    assert all(s.provenance["agent"] == "adaptive-tiled" and "AxOptimizer" in s.provenance["reason"] for s in sugs)
    _, params, outcome = agent.optimizer.get_best_points()[0]
    value = outcome["fom"][0] if isinstance(outcome["fom"], tuple) else outcome["fom"]  # (mean, sem)
    assert value == pytest.approx(max(o.values["fom"] for o in obs), rel=1e-9)


def test_failed_and_interrupted_runs_reach_tiled(shared):
    """A failed run (no events) and a run cut short (no stop document: the process died)
    are in Tiled too, saying how they ended."""
    import uuid

    store, server = shared
    cid = create_campaign(store, {"instrument": "sim-xrd", "agent": "sobol", "budget": 2})
    runner = CampaignRunner(store, cid)
    runner.instrument.lab.inject_fault("changer", "drop")
    assert runner.run() == "completed"
    failed, ok = (r.uid for r in store.runs(cid))
    # a copy of the good run, cut before its stop document, as a dead process leaves it
    cut = str(uuid.uuid4())
    store.start_run(cut, cid, None)
    desc_uid = str(uuid.uuid4())
    for name, doc in store.documents(ok):
        if name == "start":
            doc = {**doc, "uid": cut}
        elif name == "descriptor":
            doc = {**doc, "uid": desc_uid, "run_start": cut}
        elif name == "event":
            doc = {**doc, "uid": str(uuid.uuid4()), "descriptor": desc_uid}
        else:
            continue
        store.add_document(cut, name, doc)
    store.finish_run(cut, "interrupted", reason="process ended before the run finished")

    feed = TiledFeed(store, server.feed_login, ping=server.alive, poll_s=0.1).start()
    try:
        assert feed.wait_caught_up(60), feed.status()
    finally:
        feed.stop()
    client = server.feed_login()
    assert_same_as_store(client, store, failed)
    md = client[failed].metadata
    assert md["sdl"]["run_status"] == "failed" and md["stop"]["exit_status"] == "fail"
    assert_same_as_store(client, store, cut)
    md = client[cut].metadata
    assert md["sdl"]["run_status"] == "interrupted" and md["sdl"]["stop_written_by_sdl"] is True
    assert md["stop"]["exit_status"] == "abort" and "process ended" in md["stop"]["reason"]

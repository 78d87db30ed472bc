"""A bluesky-adaptive agent (its own Ax optimizer, an evaluation function that reads
runs from Tiled) drives an sdl campaign: it learns from Tiled, not from sdl's store,
and what it learns equals what the store recorded."""

from __future__ import annotations

import pytest

pytest.importorskip("tiled.server")
pytest.importorskip("bluesky_tiled_plugins")
pytest.importorskip("bluesky_adaptive")

from sdl.campaign import CampaignRunner, create_campaign  # noqa: E402
from sdl.data_views.adaptive import AdaptiveAgent, TiledEvaluation, ax_optimizer  # noqa: E402
from sdl.data_views.tiled_feed import TiledFeed  # noqa: E402
from sdl.data_views.tiled_server import EmbeddedTiled  # noqa: E402
from sdl.store import Store  # noqa: E402

pytestmark = pytest.mark.timeout(300)


def test_bluesky_adaptive_agent_learns_from_tiled(tmp_path, store_url, monkeypatch):
    import sdl.agents

    store = Store(store_url)
    server = EmbeddedTiled(tmp_path / "tiled", store_url).start()
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
        agent = made[-1]
        obs = store.observations(cid)
        assert len(obs) == 4 and all(o.ok for o in obs)
        # every observation was read back from Tiled and reduced there, to the store's value
        assert agent.evaluation.reads == [o.run_uid for o in obs]
        by_run = {p["run_uid"]: p for p in agent.ingested}
        for o in obs:
            assert by_run[o.run_uid]["fom"] == pytest.approx(o.values["fom"], rel=1e-12)
        # the points were the optimizer's own (its trial ids), and its best is the store's best
        sugs = store.suggestions(cid)
        assert all(s.provenance["agent"] == "adaptive-tiled" and "AxOptimizer" in s.provenance["reason"]
                   for s in sugs)
        _, params, outcome = agent.optimizer.get_best_points()[0]
        value = outcome["fom"][0] if isinstance(outcome["fom"], tuple) else outcome["fom"]  # (mean, sem)
        assert value == pytest.approx(max(o.values["fom"] for o in obs), rel=1e-9)
    finally:
        feed.stop()
        server.stop()
        store.close()

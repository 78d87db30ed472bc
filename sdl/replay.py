"""Replay: recompute a campaign's observations from its stored documents alone."""

from __future__ import annotations

import math

from sdl.campaign import refuse_workflow_campaign
from sdl.reduction import reduce_run
from sdl.store import Store


def replay(store: Store, campaign_id: str, rel_tol: float = 1e-9) -> list[dict]:
    """One row per successful observation: stored values, recomputed values, match."""
    # a clear error for an unknown id or a workflow campaign; the spec's instrument need not be
    # installed here: the stored documents alone give the numbers
    refuse_workflow_campaign(store.campaign(campaign_id))
    rows = []
    for obs in store.observations(campaign_id):
        if not obs.ok or obs.run_uid is None:
            continue
        recomputed = reduce_run(store.documents(obs.run_uid))
        match = all(
            math.isclose(recomputed.get(k, math.nan), v, rel_tol=rel_tol, abs_tol=1e-12) for k, v in obs.values.items()
        )
        rows.append({"run_uid": obs.run_uid, "stored": obs.values, "recomputed": recomputed, "match": match})
    return rows

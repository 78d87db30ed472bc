"""A workflow campaign as an RO-Crate: its spec and observations, every workflow's task
graph, every sample's full history (what made it, every move and measurement), and
every run's event-model documents."""

from __future__ import annotations

import io
import json
import tempfile
from pathlib import Path
from typing import Any

from sdl.store import Store, utcnow
from sdl.workflows.engine import Engine


def campaign_export(store: Store, cid: str) -> dict[str, Any]:
    eng = Engine(store)
    row = store.campaign(cid)
    samples = [eng.sample(s["id"]) for s in eng.samples(cid)]
    return {
        "id": cid, "name": row.name, "status": row.status, "message": row.message, "spec": row.spec,
        "observations": [o.model_dump(mode="json") for o in store.observations(cid)],
        "workflows": [eng.workflow(w.id) for w in eng.workflows(cid)],
        "samples": samples,
        "runs": [{"uid": r.uid, "status": r.status, "reason": r.reason,
                  "documents": [{"name": n, "doc": d} for n, d in store.documents(r.uid)]} for r in store.runs(cid)],
        "exported_at": utcnow().isoformat(),
    }


def campaign_crate(store: Store, cid: str) -> bytes:
    """The RO-Crate (zip) of a workflow campaign (the ``rocrate`` library, as the service's crates)."""
    from rocrate.rocrate import ROCrate

    ex = campaign_export(store, cid)
    files: list[tuple[str, bytes, dict]] = [
        ("campaign.json", json.dumps({k: ex[k] for k in ("id", "name", "status", "message", "spec", "observations",
                                                          "exported_at")}, indent=2, default=str).encode(),
         {"name": "workflow campaign: spec, state and observations", "encodingFormat": "application/json"}),
    ]
    for wf in ex["workflows"]:
        files.append((f"workflows/{wf['id']}.json", json.dumps(wf, indent=2, default=str).encode(),
                      {"name": f"workflow {wf['id']} ({wf['status']}): task graph with each task's state",
                       "encodingFormat": "application/json"}))
    for s in ex["samples"]:
        files.append((f"samples/{s['id']}.json", json.dumps(s, indent=2, default=str).encode(),
                      {"name": f"sample {s['id']} ({s['state']}): what made it, where it is, its full history",
                       "encodingFormat": "application/json"}))
    for r in ex["runs"]:
        files.append((f"runs/{r['uid']}.jsonl", "\n".join(json.dumps(d, default=str) for d in r["documents"]).encode(),
                      {"name": f"run {r['uid']} ({r['status']}): event-model documents, one per line",
                       "encodingFormat": "application/x-ndjson"}))
    crate = ROCrate()
    crate.name = ex["name"] or f"sdl workflow campaign {cid}"
    crate.description = (f"Workflow campaign {cid}: {len(ex['workflows'])} workflows, {len(ex['samples'])} samples "
                         f"with their histories, {len(ex['runs'])} runs.")
    crate.root_dataset["identifier"] = cid
    crate.root_dataset["keywords"] = ["self-driving lab", "workflow", "sample provenance", "bluesky"]
    for name, data, props in files:
        crate.add_file(io.BytesIO(data), dest_path=name, properties=props)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "crate.zip"
        crate.write_zip(str(out))
        return out.read_bytes()

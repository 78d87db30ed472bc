"""A campaign as an RO-Crate (zip): spec, table, observations, suggestions with their
provenance, every run's event-model documents and the campaign as NeXus/HDF5, with
FAIR metadata (instrument, proposal, people, licence and embargo, one CreateAction per
run: :mod:`sdl.data_views.fair`), described in
``ro-crate-metadata.json`` (the ``rocrate`` library; a minimal hand-written crate
when it is not installed)."""

from __future__ import annotations

import io
import json
import tempfile
import zipfile
from pathlib import Path
from typing import Any


def _files(svc: Any, p: Any, cid: str) -> tuple[dict, list[tuple[str, bytes, dict]]]:
    export = svc.campaign_export(p, cid)
    cols, rows = svc.table(p, cid)
    files: list[tuple[str, bytes, dict]] = [
        ("campaign.json", json.dumps({k: v for k, v in export.items() if k != "runs"}, indent=2).encode(),
         {"name": "campaign: spec, state, suggestions (with provenance) and observations",
          "encodingFormat": "application/json"}),
        ("table.csv", svc.to_csv(cols, rows).encode(),
         {"name": "one row per suggestion: parameters, measured values, status, provenance",
          "encodingFormat": "text/csv"}),
    ]
    nxs = _nexus_file(svc, p, cid)
    if nxs is not None:
        files.append(("campaign.nxs", nxs, {
            "name": "the campaign as NeXus/HDF5: one NXentry per run (NXsample, NXinstrument, NXdata, provenance)",
            "encodingFormat": "application/x-hdf5", "conformsTo": {"@id": "https://www.nexusformat.org/"}}))
    for run in export["runs"]:
        lines = "\n".join(json.dumps(d) for d in run["documents"])
        files.append((f"runs/{run['uid']}.jsonl", lines.encode(), {
            "name": f"run {run['uid']} ({run['status']}): event-model documents, one per line",
            "encodingFormat": "application/x-ndjson",
        }))
    return export, files


def _nexus_file(svc: Any, p: Any, cid: str) -> bytes | None:
    try:
        from sdl.data_views import nexus

        nexus._nx()
    except (ImportError, RuntimeError):  # pragma: no cover - nexusformat not installed
        return None
    row = svc._campaign_readable(p, cid)
    return nexus.to_bytes(nexus.write_campaign, svc.store, cid, proposal=row.proposal_id)


def _fair(svc: Any, p: Any, cid: str, export: dict, files: list) -> tuple[dict, list[dict]]:
    """Instrument, proposal, people, licence and embargo, one CreateAction per run (sdl.data_views.fair)."""
    from sdl.data_views.fair import describe

    row = svc._campaign_readable(p, cid)
    try:
        proposal = svc.get_proposal(p, row.proposal_id)
    except Exception:  # noqa: BLE001 - not readable as a proposal: describe the data only
        proposal = None
    try:
        instrument = svc.instrument_json(export["instrument"])
    except Exception:  # noqa: BLE001 - no longer configured
        instrument = None
    run_files = {n.removeprefix("runs/").removesuffix(".jsonl"): n for n, _, _ in files if n.startswith("runs/")}
    return describe(export, proposal, instrument, run_files)


def campaign_crate(svc: Any, p: Any, cid: str) -> bytes:
    export, files = _files(svc, p, cid)
    root_props, entities = _fair(svc, p, cid, export, files)
    description = (f"Autonomous campaign {cid} on {export['instrument']} with agent {export['agent']}: "
                   f"{export['experiments']} experiments of a budget of {export['budget']}; objective "
                   f"{export['objective']['name']} ({export['objective']['direction']}).")
    try:
        from rocrate.rocrate import ROCrate
    except ImportError:  # pragma: no cover - optional dependency
        return _plain_crate(export, files, description, root_props, entities)
    crate = ROCrate()
    crate.name = export.get("name") or f"sdl campaign {cid}"
    crate.description = description
    crate.root_dataset["dateCreated"] = export.get("created_at")
    crate.root_dataset["identifier"] = cid
    crate.root_dataset["keywords"] = ["self-driving lab", "autonomous experimentation", "bluesky",
                                      export["instrument"]]
    for name, data, props in files:
        crate.add_file(io.BytesIO(data), dest_path=name, properties=props)
    from rocrate.model.contextentity import ContextEntity

    for e in entities:
        crate.add(ContextEntity(crate, e["@id"], properties={k: v for k, v in e.items() if k != "@id"}))
    for k, v in root_props.items():
        crate.root_dataset[k] = v
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "crate.zip"
        crate.write_zip(str(out))
        return out.read_bytes()


def _plain_crate(export: dict, files: list, description: str, root_props: dict,
                 entities: list[dict]) -> bytes:  # pragma: no cover
    graph: list[dict] = [
        {"@id": "ro-crate-metadata.json", "@type": "CreativeWork", "about": {"@id": "./"},
         "conformsTo": {"@id": "https://w3id.org/ro/crate/1.1"}},
        {"@id": "./", "@type": "Dataset", "name": export.get("name") or export["id"], "description": description,
         "datePublished": export["exported_at"], "hasPart": [{"@id": n} for n, _, _ in files], **root_props},
    ]
    graph += entities
    graph += [{"@id": n, "@type": "File", **props} for n, _, props in files]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("ro-crate-metadata.json", json.dumps({"@context": "https://w3id.org/ro/crate/1.1/context",
                                                         "@graph": graph}, indent=2))
        for n, data, _ in files:
            z.writestr(n, data)
    return buf.getvalue()

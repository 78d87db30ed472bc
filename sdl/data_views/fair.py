"""FAIR metadata for a campaign's RO-Crate: the instrument, the proposal, the people, the
licence and the embargo, and one ``CreateAction`` per run, in the schema.org terms the
RO-Crate 1.1 specification recommends (so research-data platforms that ingest RO-Crate,
e.g. GakuNin RDM / the NII Research Data Cloud, Zenodo, WorkflowHub, read them).

:func:`describe` is a pure function of the campaign export and the proposal; it returns
properties for the root ``Dataset`` and the contextual entities to add. The table of
which sdl field goes where is in ``docs/data.md``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

#: the licence of open proposals' data once the embargo has passed
OPEN_LICENSE = {"@id": "https://creativecommons.org/licenses/by/4.0/", "@type": "CreativeWork",
                "name": "Creative Commons Attribution 4.0 International", "identifier": "CC-BY-4.0"}
RESTRICTED_LICENSE_ID = "#license-restricted"
STATUS = {"success": "http://schema.org/CompletedActionStatus", "failed": "http://schema.org/FailedActionStatus",
          "aborted": "http://schema.org/FailedActionStatus", "interrupted": "http://schema.org/FailedActionStatus",
          "running": "http://schema.org/ActiveActionStatus"}


def _person(name: str) -> str:
    return f"#person-{name}"


def _access(proposal: dict | None, now: dt.datetime) -> tuple[dict, str, bool, list[dict]]:
    """(licence reference, conditionsOfAccess, isAccessibleForFree, licence entities)."""
    if proposal is None:
        return ({"@id": RESTRICTED_LICENSE_ID}, "Not attached to a proposal: for the facility's staff only.",
                False, [_restricted("no proposal")])
    kind = proposal.get("kind")
    emb = proposal.get("embargo_until")
    if kind == "open":
        when = dt.datetime.fromisoformat(emb) if emb else None
        if when is not None and when.tzinfo is None:
            when = when.replace(tzinfo=dt.timezone.utc)
        public = when is not None and when <= now
        text = (f"Open proposal: the data are public from {emb} (end of the embargo), under CC BY 4.0; "
                f"{'the embargo has ended' if public else 'until then readable by the proposal members only'}."
                if emb else "Open proposal, embargo date not set yet: readable by the proposal members only.")
        return {"@id": OPEN_LICENSE["@id"]}, text, public, [dict(OPEN_LICENSE)]
    if kind == "coalition":
        text = (f"Coalition proposal: readable by the members of the proposals of coalition "
                f"{proposal.get('coalition')!r} only; not for redistribution.")
        return {"@id": RESTRICTED_LICENSE_ID}, text, False, [_restricted(text)]
    text = "Proprietary proposal: readable by the proposal members only (not even facility staff); " \
           "not for redistribution."
    return {"@id": RESTRICTED_LICENSE_ID}, text, False, [_restricted(text)]


def _restricted(text: str) -> dict:
    return {"@id": RESTRICTED_LICENSE_ID, "@type": "CreativeWork", "name": "All rights reserved (restricted access)",
            "description": text}


def describe(export: dict, proposal: dict | None, instrument: dict | None = None,
             run_files: dict[str, str] | None = None, now: dt.datetime | None = None,
             sdl_version: str | None = None) -> tuple[dict, list[dict]]:
    """Root-dataset properties and contextual entities for one campaign.

    ``export`` is :meth:`LabService.campaign_export`'s answer, ``proposal`` the
    proposal's JSON (with ``members``), ``instrument`` the instrument's JSON,
    ``run_files`` run uid -> the crate file holding that run's documents.
    """
    now = now or dt.datetime.now(dt.timezone.utc)
    if sdl_version is None:
        from sdl import __version__ as sdl_version
    run_files = run_files or {}
    entities: list[dict] = []
    root: dict[str, Any] = {}

    license_ref, conditions, free, license_entities = _access(proposal, now)
    root.update({"license": license_ref, "conditionsOfAccess": conditions, "isAccessibleForFree": free})
    entities += license_entities

    inst_name = export.get("instrument") or (instrument or {}).get("name") or "instrument"
    inst_id = f"#instrument-{inst_name}"
    inst = {"@id": inst_id, "@type": "IndividualProduct", "name": inst_name, "identifier": inst_name,
            "description": (instrument or {}).get("description") or f"the instrument {inst_name} of the lab"}
    objectives = [{"@id": f"{inst_id}-objective-{o.get('name')}", "@type": "PropertyValue", "name": "objective",
                   "value": o.get("name"), "description": f"{o.get('direction', '')} {o.get('name')}".strip()}
                  for o in (instrument or {}).get("objectives") or []]
    if objectives:  # flattened: RO-Crate wants every nested object as an entity of its own
        inst["additionalProperty"] = [{"@id": o["@id"]} for o in objectives]
    entities.append(inst)
    entities += objectives  # named by every run's CreateAction (RO-Crate: equipment used)

    sdl_id = "#software-sdl"
    entities.append({"@id": sdl_id, "@type": "SoftwareApplication", "name": "sdl", "version": sdl_version,
                     "description": "self-driving-lab orchestration: bluesky plans, agents, a cloud-lab service"})
    agent_name = export.get("agent") or "agent"
    agent_id = f"#agent-{agent_name}"
    entities.append({"@id": agent_id, "@type": "SoftwareApplication", "name": f"sdl agent {agent_name}",
                     "identifier": agent_name, "isPartOf": {"@id": sdl_id},
                     "description": "the decision-making agent that chose each measurement (see each "
                                    "suggestion's provenance in campaign.json)"})

    people: list[dict] = []
    if proposal is not None:
        pid = proposal["id"]
        prop_id = f"#proposal-{pid}"
        members = proposal.get("members") or []
        members = sorted(members, key=lambda m: (m.get("role") != "pi", m.get("name", "")))
        for m in members:
            people.append({"@id": _person(m["name"]), "@type": "Person", "name": m["name"],
                           "identifier": m.get("user_id") or m["name"], "roleName": m.get("role")})
        proj = {"@id": prop_id, "@type": "ResearchProject", "name": proposal.get("title") or pid, "identifier": pid,
                "description": proposal.get("abstract") or "", "additionalType": f"{proposal.get('kind')} proposal",
                "member": [{"@id": p["@id"]} for p in people]}
        if proposal.get("created_at"):
            proj["foundingDate"] = proposal["created_at"]
        entities.append(proj)
        root["funder"] = {"@id": prop_id}  # RO-Crate 1.1: projects and grants are linked with `funder`
        if people:
            root["author"] = [{"@id": p["@id"]} for p in people]
        entities += people
    pi = {"@id": people[0]["@id"]} if people else None

    samples: dict[str, dict] = {}
    actions = []
    for run in export.get("runs", []):
        docs = run.get("documents") or []
        start = next((d["doc"] for d in docs if d.get("name") == "start"), {})
        action = {"@id": f"#run-{run['uid']}", "@type": "CreateAction", "name": f"run {run['uid']}",
                  "identifier": run["uid"], "instrument": [{"@id": inst_id}, {"@id": agent_id}],
                  "actionStatus": STATUS.get(run.get("status"), "http://schema.org/PotentialActionStatus")}
        if run.get("started_at"):
            action["startTime"] = run["started_at"]
        if run.get("finished_at"):
            action["endTime"] = run["finished_at"]
        if run.get("reason"):
            action["error"] = run["reason"]
        prov = start.get("provenance") or {}
        if prov.get("reason"):
            action["description"] = f"why: {prov['reason']}"
        if pi is not None:
            action["agent"] = pi
        sample = start.get("sample_id")
        if sample:
            sid = f"#sample-{sample}"
            samples.setdefault(sid, {"@id": sid, "@type": "Thing", "name": f"sample {sample}", "identifier": sample,
                                     "description": "parameters: " + ", ".join(
                                         f"{k}={v}" for k, v in (start.get("params") or {}).items())})
            action["object"] = {"@id": sid}
        if run["uid"] in run_files:
            action["result"] = {"@id": run_files[run["uid"]]}
        actions.append(action)
    entities += list(samples.values()) + actions
    root["mentions"] = [{"@id": a["@id"]} for a in actions]  # RO-Crate: actions hang off the root by `mentions`
    return root, entities

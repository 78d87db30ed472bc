"""FAIR metadata in the campaign's RO-Crate: instrument, proposal, people, licence and
embargo, one CreateAction per run linked to its file; the NeXus file inside."""

from __future__ import annotations

import datetime as dt
import io
import json
import zipfile

import pytest

from sdl.data_views.fair import OPEN_LICENSE, RESTRICTED_LICENSE_ID, describe

NOW = dt.datetime(2026, 6, 1, tzinfo=dt.timezone.utc)
EXPORT = {"id": "c1", "instrument": "sim-xrd", "agent": "bo", "runs": [
    {"uid": "r1", "status": "success", "reason": "", "started_at": "2026-05-01T10:00:00+00:00",
     "finished_at": "2026-05-01T10:01:00+00:00",
     "documents": [{"name": "start", "doc": {"sample_id": "s-1", "params": {"T": 400},
                                              "provenance": {"reason": "highest expected improvement"}}}]},
    {"uid": "r2", "status": "failed", "reason": "detector timeout", "started_at": "2026-05-01T10:02:00+00:00",
     "finished_at": None, "documents": []},
]}


def _proposal(kind: str, embargo: str | None = None) -> dict:
    return {"id": "P1", "title": "phase search", "abstract": "find alpha", "kind": kind, "coalition": None,
            "embargo_until": embargo, "created_at": "2026-01-01T00:00:00+00:00",
            "members": [{"user_id": "u2", "name": "bob", "role": "member"},
                        {"user_id": "u1", "name": "alice", "role": "pi"}]}


def _by_id(entities: list[dict]) -> dict[str, dict]:
    return {e["@id"]: e for e in entities}


def test_proprietary_is_restricted_and_described():
    root, entities = describe(EXPORT, _proposal("proprietary"), {"name": "sim-xrd", "description": "XRD"},
                              {"r1": "runs/r1.jsonl"}, now=NOW, sdl_version="0.1.0")
    e = _by_id(entities)
    assert root["license"] == {"@id": RESTRICTED_LICENSE_ID} and root["isAccessibleForFree"] is False
    assert "members only" in root["conditionsOfAccess"]
    assert e[RESTRICTED_LICENSE_ID]["@type"] == "CreativeWork"
    # the proposal as a research project, linked the RO-Crate way (funder), its people as authors, PI first
    assert root["funder"] == {"@id": "#proposal-P1"}
    proj = e["#proposal-P1"]
    assert proj["@type"] == "ResearchProject" and proj["identifier"] == "P1" and proj["name"] == "phase search"
    assert root["author"] == [{"@id": "#person-alice"}, {"@id": "#person-bob"}]
    assert e["#person-alice"]["@type"] == "Person" and e["#person-alice"]["roleName"] == "pi"
    # the instrument and the agent are the instruments of each run's CreateAction
    assert e["#instrument-sim-xrd"]["@type"] == "IndividualProduct"
    run = e["#run-r1"]
    assert run["@type"] == "CreateAction" and run["result"] == {"@id": "runs/r1.jsonl"}
    assert {"@id": "#instrument-sim-xrd"} in run["instrument"] and {"@id": "#agent-bo"} in run["instrument"]
    assert run["object"] == {"@id": "#sample-s-1"} and run["agent"] == {"@id": "#person-alice"}
    assert run["actionStatus"].endswith("CompletedActionStatus") and "expected improvement" in run["description"]
    failed = e["#run-r2"]
    assert failed["actionStatus"].endswith("FailedActionStatus") and failed["error"] == "detector timeout"
    assert root["mentions"] == [{"@id": "#run-r1"}, {"@id": "#run-r2"}]


@pytest.mark.parametrize("embargo, public", [("2026-01-01T00:00:00+00:00", True), ("2027-01-01T00:00:00+00:00", False)])
def test_open_proposal_is_cc_by_after_the_embargo(embargo, public):
    root, entities = describe(EXPORT, _proposal("open", embargo), now=NOW, sdl_version="0.1.0")
    assert root["license"] == {"@id": OPEN_LICENSE["@id"]}
    assert _by_id(entities)[OPEN_LICENSE["@id"]]["identifier"] == "CC-BY-4.0"
    assert root["isAccessibleForFree"] is public
    assert embargo in root["conditionsOfAccess"]


def test_campaign_crate_carries_the_fair_metadata(tmp_path):
    from sdl.service.testing import start_lab

    lab = start_lab(tmp_path, ("sim-xrd",))
    try:
        alice = lab.user("alice-fair")
        prop = lab.proposal(alice, ["sim-xrd"], title="FAIR test")
        camp = alice.create_campaign(prop["id"], {"instrument": "sim-xrd", "agent": "sobol", "budget": 2},
                                     start=True)
        assert alice.wait_campaign(camp["id"], timeout=120)["state"] == "completed"
        z = zipfile.ZipFile(io.BytesIO(alice.rocrate(camp["id"])))
        meta = json.loads(z.read("ro-crate-metadata.json"))
        graph = {e["@id"]: e for e in meta["@graph"]}
        root = graph["./"]
        assert root["funder"] == {"@id": f"#proposal-{prop['id']}"}
        assert graph[f"#proposal-{prop['id']}"]["name"] == "FAIR test"
        assert root["license"] == {"@id": RESTRICTED_LICENSE_ID} and root["isAccessibleForFree"] is False
        assert graph["#instrument-sim-xrd"]["@type"] == "IndividualProduct"
        actions = [graph[m["@id"]] for m in root["mentions"]]
        assert len(actions) == 2 and all(a["@type"] == "CreateAction" for a in actions)
        for a in actions:  # each run's file is in the zip and described
            assert a["result"]["@id"] in z.namelist() and a["result"]["@id"] in graph
        assert {"@id": "#person-alice-fair"} in root["author"]
        if "campaign.nxs" in z.namelist():  # with nexusformat installed
            assert graph["campaign.nxs"]["encodingFormat"] == "application/x-hdf5"
            assert z.read("campaign.nxs")[:8] == b"\x89HDF\r\n\x1a\n"
    finally:
        lab.close()
        lab.server.stop()

"""NeXus/HDF5 export: a campaign of the simulated lab as one file (NXentry per run),
checked with nxvalidate (definitions shipped in the package: offline), read back with
nexusformat and h5py; the CLI command; the HTTP download and its access rule."""

from __future__ import annotations

import json

import numpy as np
import pytest

nx = pytest.importorskip("nexusformat.nexus")
h5py = pytest.importorskip("h5py")
pytest.importorskip("nxvalidate")

from sdl.campaign import CampaignRunner, create_campaign  # noqa: E402
from sdl.data_views import nexus  # noqa: E402
from sdl.store import Store  # noqa: E402


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    """A finished 3-run campaign in a store of its own."""
    from sdl.database import drop_scratch_store, scratch_store_url

    folder = tmp_path_factory.mktemp("nexus")
    url = scratch_store_url(folder / "store.sqlite")
    store = Store(url)
    cid = create_campaign(store, {"instrument": "sim-xrd", "agent": "sobol", "budget": 3})
    assert CampaignRunner(store, cid).run() == "completed"
    yield store, cid, folder
    store.close()
    drop_scratch_store(folder / "store.sqlite")


def test_campaign_file_validates_and_reads_back(done):
    store, cid, folder = done
    path = nexus.write_campaign(store, cid, folder / "campaign.nxs", proposal="P-1")
    check = nexus.validate(path)
    assert check["errors"] == 0 and check["warnings"] == 0, check["messages"]

    runs = store.runs(cid)
    obs = {o.run_uid: o for o in store.observations(cid)}
    root = nx.nxload(str(path))
    entries = sorted(k for k in root.entries if k.startswith("run_"))
    assert len(entries) == len(runs) == 3
    for name, run in zip(entries, runs):
        e = root[name]
        assert e.nxclass == "NXentry"
        assert e["entry_identifier"].nxvalue == run.uid
        assert e["collection_identifier"].nxvalue == cid
        assert e["experiment_identifier"].nxvalue == "P-1"
        docs = store.documents(run.uid)
        start = docs[0][1]
        assert e["sample"].nxclass == "NXsample" and e["sample/name"].nxvalue == start["sample_id"]
        assert e["instrument"].nxclass == "NXinstrument" and e["instrument/name"].nxvalue == "sim-xrd"
        # the data are the event's data, with the detector's two-theta as the axis
        data = e["data"]
        assert data.nxclass == "NXdata" and data.attrs["signal"] == "detector_spectrum"
        event = next(d for n, d in docs if n == "event")
        np.testing.assert_allclose(np.atleast_2d(data["detector_spectrum"].nxvalue)[0],
                                   event["data"]["detector_spectrum"])
        assert data["detector_spectrum"].attrs["units"] == "counts"
        assert list(data.attrs["axes"]) == ["seq_num", "detector_two_theta"]
        assert len(data["detector_two_theta"].nxvalue) == len(event["data"]["detector_spectrum"])
        # the agent's provenance, as the start document has it
        note = e["provenance"]
        assert note.nxclass == "NXnote" and note["author"].nxvalue == "sobol"
        assert json.loads(note["data"].nxvalue) == start["provenance"]
        assert e["observation/fom"].nxvalue == pytest.approx(obs[run.uid].values["fom"])
        # every document, lossless
        assert nexus.read_documents(path, name) == docs
    table = root["campaign/observations"]
    assert table.attrs["signal"] == "fom"
    np.testing.assert_allclose(table["fom"].nxvalue, [o.values["fom"] for o in store.observations(cid)])
    # h5py sees the NeXus classes too
    with h5py.File(path, "r") as f:
        assert f["run_0000"].attrs["NX_class"] in (b"NXentry", "NXentry")
        assert f["run_0000/data"].attrs["signal"] in (b"detector_spectrum", "detector_spectrum")


def test_validator_finds_errors(tmp_path):
    """The check is not a rubber stamp: a bad file is reported."""
    root = nx.NXroot(nx.NXentry())
    root["entry/start_time"] = "yesterday afternoon"  # NX_DATE_TIME
    root["entry/data"] = nx.NXdata()
    root["entry/data"].attrs["signal"] = "missing"
    root.save(str(tmp_path / "bad.nxs"), mode="w")
    check = nexus.validate(tmp_path / "bad.nxs")
    assert check["errors"] + check["warnings"] > 0


def test_cli_exports_one_run(done, tmp_path):
    from typer.testing import CliRunner

    from sdl.cli import app

    store, cid, _ = done
    uid = store.runs(cid)[0].uid
    out = tmp_path / "run.nxs"
    res = CliRunner().invoke(app, ["export", "nexus", "--run", uid, "--store", store.url, "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert "0 errors" in res.output
    assert nexus.read_documents(out) == store.documents(uid)
    res = CliRunner().invoke(app, ["export", "nexus", "--run", "nope", "--store", store.url, "-o", str(out)])
    assert res.exit_code == 2 and "run_uid" in res.output
    res = CliRunner().invoke(app, ["export", "nexus", "--store", store.url])
    assert res.exit_code == 2 and "--campaign or --run" in res.output


def test_http_download_follows_the_access_rules(tmp_path):
    import httpx

    from sdl.service.testing import start_lab

    lab = start_lab(tmp_path, ("sim-xrd",))
    try:
        alice, bob = lab.user("alice-nx"), lab.user("bob-nx")
        prop = lab.proposal(alice, ["sim-xrd"])  # proprietary
        camp = alice.create_campaign(prop["id"], {"instrument": "sim-xrd", "agent": "sobol", "budget": 2},
                                     start=True)
        assert alice.wait_campaign(camp["id"], timeout=120)["state"] == "completed"
        cid = camp["id"]
        run_uid = alice.export(cid)["runs"][0]["uid"]

        def get(client, path):
            return httpx.get(lab.url + path, headers={"Authorization": f"Bearer {client.token}"}, timeout=60)

        r = get(alice, f"/api/campaigns/{cid}/nexus")
        assert r.status_code == 200 and r.headers["content-type"] == "application/x-hdf5"
        (tmp_path / "c.nxs").write_bytes(r.content)
        assert nexus.validate(tmp_path / "c.nxs")["errors"] == 0
        root = nx.nxload(str(tmp_path / "c.nxs"))
        assert root["run_0000/experiment_identifier"].nxvalue == prop["id"]
        r = get(alice, f"/api/runs/{run_uid}/nexus")
        assert r.status_code == 200
        # a non-member does not see that it exists
        assert get(bob, f"/api/campaigns/{cid}/nexus").status_code == 404
        assert get(bob, f"/api/runs/{run_uid}/nexus").status_code == 404
        assert httpx.get(lab.url + f"/api/runs/{run_uid}/nexus").status_code == 401
        assert alice.get("/api/tiled") == {"enabled": False, "url": None}  # Tiled is optional: off here
    finally:
        lab.close()
        lab.server.stop()


def test_failed_runs_export_and_validate(tmp_path, store):
    """A run that failed (a dropped sample: no events) still gets its entry, and says how it ended."""
    cid = create_campaign(store, {"instrument": "sim-xrd", "agent": "sobol", "budget": 2})
    runner = CampaignRunner(store, cid)
    runner.instrument.lab.inject_fault("changer", "drop")
    assert runner.run() == "completed"
    path = nexus.write_campaign(store, cid, tmp_path / "c.nxs")
    check = nexus.validate(path)
    assert check["errors"] == 0, check["messages"]
    root = nx.nxload(str(path))
    assert root["run_0000/observation/status"].nxvalue == "failed"
    assert root["run_0000/observation/ok"].nxvalue == 0 and "dropped" in root["run_0000/observation/error"].nxvalue
    assert root["run_0001/observation/status"].nxvalue == "success"
    assert list(root["campaign/observations/ok"].nxvalue) == [0, 1]

"""A facility serves a CSV table as a pool: its options (objective, columns) are set in the
service settings (campaign specs cannot set them), and its name, a path, holds slashes."""

from __future__ import annotations

import pytest

from sdl.client import ServiceError
from sdl.service.settings import InstrumentConfig
from sdl.service.testing import start_lab


def _notebook(path):
    lines = ["sample_id,date,solvent,temp_C,yield,comment"]
    for k, (s, t) in enumerate((s, t) for s in ("water", "ethanol", "DMF") for t in (20, 40, 60, 80)):
        lines.append(f"S{k:03d},2026-11-0{1 + k % 9},{s},{t},{40 + 5 * k % 17 + t / 4:.1f},{'ok' if k % 2 else 'cloudy'}")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    folder = tmp_path_factory.mktemp("table")
    deep = folder / "campaigns-2026" / "a-folder-name-as-long-as-facilities-keep-them"
    deep.mkdir(parents=True)
    table = _notebook(deep / "notebook.csv")
    name = f"pool:{table}"
    assert len(name) > 100  # the service's tables held 60 characters until migration 0011
    lab = start_lab(folder / "svc", ("sim-xrd", InstrumentConfig(
        name=name, options={"objective": "yield:max", "ignore_columns": ["comment"]})))
    lab.table = name  # type: ignore[attr-defined]
    yield lab
    lab.close()
    lab.server.stop()


def test_a_remote_user_runs_a_campaign_on_a_table_pool_the_facility_configured(lab):
    user = lab.user()
    prop = lab.proposal(user, [lab.table])
    camp = user.create_campaign(prop["id"], {"instrument": lab.table, "agent": "random", "budget": 5, "seed": 2},
                                start=True)
    done = user.wait_campaign(camp["id"], timeout=120)
    assert done["state"] == "completed", done
    sugs = user.get(f"/api/campaigns/{camp['id']}/suggestions")
    # the sample id and the dates are left out by themselves, the comment by the facility's option
    assert len(sugs) == 5 and all(set(s["params"]) == {"solvent", "temp_c"} for s in sugs)
    assert done["objective"]["name"] == "yield"
    with pytest.raises(ServiceError, match="instrument_options: not taken by the service"):
        user.create_campaign(prop["id"], {"instrument": lab.table, "agent": "random", "budget": 2,
                                          "instrument_options": {"objective": "temp_C"}})


def test_every_instrument_route_takes_a_name_with_slashes(lab):
    user = lab.user()
    assert "/" in lab.table
    info = user.instrument(lab.table)
    assert info["name"] == lab.table and [p["name"] for p in info["space"]["parameters"]] == ["solvent", "temp_c"]
    assert len(user.get(f"/api/instruments/{lab.table}/pool")) == 12
    assert user.get(f"/api/instruments/{lab.table}/queue") == []
    assert "properties" in user.get(f"/api/instruments/{lab.table}/plans/autonomous_step")
    with pytest.raises(ServiceError) as err:  # staff only: refused for the role, not "not found"
        user.post(f"/api/instruments/{lab.table}/pause", {})
    assert err.value.status == 403


def test_a_table_pool_without_its_objective_is_refused_naming_the_setting(tmp_path):
    from sdl.errors import InvalidInput

    name = f"pool:{_notebook(tmp_path / 'n.csv')}"
    with pytest.raises(InvalidInput) as err:
        InstrumentConfig(name=name).build(seed=0, time_scale=0.0, n_slots=1)
    assert err.value.field == f"instruments[{name}].options.objective"
    assert "the instrument's options in service settings" in err.value.message
    with pytest.raises(InvalidInput) as err:
        InstrumentConfig(name=name, options={"objective": "yield", "ignore_columns": ["colour"]}).build(
            seed=0, time_scale=0.0, n_slots=1)
    assert err.value.field == f"instruments[{name}].options.ignore_columns" and "'colour' is not a column" in str(err.value)
    binary = tmp_path / "bin.csv"
    binary.write_bytes(b"\xff\xfe\x00a,b\n")
    with pytest.raises(InvalidInput) as err:
        InstrumentConfig(name=f"pool:{binary}", options={"objective": "b"}).build(seed=0, time_scale=0.0, n_slots=1)
    assert err.value.field == f"instruments[pool:{binary}].name" and "not UTF-8 text" in err.value.message

"""Bad input to ``sdl workflow``, ``sdl export nexus`` and ``sdl db``: a clear error naming the
option or file (exit 2, no traceback), and nothing stored or created before the input is good."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from sdl.cli import app
from sdl.store import Store, sqlite_url


def _invoke(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(app, list(args))
    out = " ".join(res.output.split())  # rich wraps long lines
    assert "Traceback" not in out, out
    return res.exit_code, out


@pytest.fixture
def url(tmp_path):
    return sqlite_url(tmp_path / "x.sqlite")


# ------------------------------------------------------------------ sdl workflow run / worker
@pytest.mark.parametrize("opts, says", [
    (["--workers", "bogus"], "--workers: allowed: threads, processes, none (got 'bogus')"),
    (["--workers", "threads", "--lease", "-1"], "--lease: must be a number of seconds above 0"),
    (["--workers", "threads", "--lease", "0"], "--lease: must be a number of seconds above 0"),
    (["--workers", "threads", "--timeout", "-1"], "--timeout: must be a number of seconds above 0"),
])
def test_workflow_run_options_are_checked_before_a_campaign_is_created(url, opts, says):
    code, out = _invoke("workflow", "run", *opts, "--budget", "1", "--store", url)
    assert code == 2 and says in out, out
    assert Store(url).campaigns() == []


@pytest.mark.parametrize("content, says", [
    (b"null", "a workflow (campaign) spec is a JSON object"),
    (b"[1, 2]", "a workflow (campaign) spec is a JSON object"),
    (b"\xff\xfe\x00", "not UTF-8 text"),
])
def test_a_workflow_spec_that_is_no_json_object_is_said(tmp_path, url, content, says):
    path = tmp_path / "spec.json"
    path.write_bytes(content)
    code, out = _invoke("workflow", "validate", str(path))
    assert code == 2 and says in out and "spec.json" in out.replace(" ", ""), out  # a long path wraps mid-word
    code, out = _invoke("workflow", "run", str(path), "--budget", "2", "--store", url)
    assert code == 2 and says in out, out
    assert Store(url).campaigns() == []


@pytest.mark.parametrize("options", ["{bad", "[1]"])
def test_workflow_worker_options_must_be_a_json_object(options):
    code, out = _invoke("workflow", "worker", "sim-synth", "--options", options)
    assert code == 2 and "--options" in out and "JSON object" in out, out


def test_workflow_run_resumes_a_unique_prefix_of_a_campaign_id(url):
    from sdl.workflows.campaign import create_workflow_campaign
    from sdl.workflows.stations import three_station_workflow

    create_workflow_campaign(Store(url), {"name": "w", "workflow": three_station_workflow(), "time_scale": 0.0,
                                          "budget": 1}, "wfcamp-1")
    # no workers (they would run elsewhere) and a short timeout: opening it is what is tested
    code, out = _invoke("workflow", "run", "--resume", "wfcamp", "--workers", "none", "--timeout", "0.5",
                        "--lease", "1", "--store", url)
    assert code == 130 and "campaign wfcamp-1:" in out and "interrupted" in out, out  # the timeout ended it
    code, out = _invoke("workflow", "run", "--resume", "zz", "--workers", "none", "--store", url)
    assert code == 2 and "campaign_id: no campaign id starts with this" in out, out


# ------------------------------------------------------------------------ sdl export nexus
@pytest.fixture
def campaign(url):
    from sdl.campaign import create_campaign

    create_campaign(Store(url), {"instrument": "sim-xrd", "agent": "random", "budget": 1}, "mine-1")
    return url


def test_export_nexus_takes_a_unique_prefix_and_names_the_file_after_the_full_id(campaign, tmp_path,
                                                                                  monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out = _invoke("export", "nexus", "--campaign", "mine", "--store", campaign, "--no-validate")
    assert code == 0 and "wrote mine-1.nxs" in out, out
    assert (tmp_path / "mine-1.nxs").is_file()


@pytest.mark.parametrize("where, says", [
    ("missing/dir/x.nxs", "-o/--out: folder"),
    (".", "-o/--out: is a folder"),
])
def test_export_nexus_says_an_output_it_cannot_write(campaign, tmp_path, where, says):
    code, out = _invoke("export", "nexus", "--campaign", "mine-1", "--store", campaign, "--no-validate",
                        "-o", str(tmp_path / where))
    assert code == 2 and says in out, out


def test_export_nexus_default_name_never_leaves_the_folder():
    from sdl.data_views.cli import _default_name

    assert str(_default_name("../etc/x")) == "___etc_x.nxs"
    assert str(_default_name("a04a85ff-1_x")) == "a04a85ff-1_x.nxs"


# -------------------------------------------------------------------------- sdl db upgrade
@pytest.mark.parametrize("revision", ["nope", ""])
def test_db_upgrade_refuses_an_unknown_revision_before_opening_the_database(tmp_path, url, revision):
    code, out = _invoke("db", "upgrade", "--revision", revision, "--store", url)
    assert code == 2 and "--revision: allowed: 'head'" in out and "'0001'" in out, out
    assert not (tmp_path / "x.sqlite").exists()


def test_db_upgrade_says_a_relative_revision_past_the_newest(url):
    code, out = _invoke("db", "upgrade", "--revision", "+99", "--store", url)
    assert code == 2 and "--revision" in out, out
    code, out = _invoke("db", "upgrade", "--revision", "+1", "--store", url)
    assert code == 0 and "migrated" in out, out


def test_workflow_validate_checks_the_agent_options_of_a_campaign_spec(tmp_path):
    from sdl.workflows.stations import three_station_workflow

    path = tmp_path / "camp.json"
    path.write_text(json.dumps({"workflow": three_station_workflow(), "agent": "botorch",
                                "agent_options": {"beta": -1}}))
    code, out = _invoke("workflow", "validate", str(path))
    assert code == 2 and "agent_options.beta: must be a number above 0" in out, out

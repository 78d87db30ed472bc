"""Bad input on the command line: a clear error naming the field (exit 2), nothing stored."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from sdl.cli import app
from sdl.store import Store, sqlite_url


@pytest.fixture
def cli(tmp_path):
    url = sqlite_url(tmp_path / "cli.sqlite")
    runner = CliRunner()

    def run(*args: str):
        res = runner.invoke(app, [*args, "--store", url] if args[0] in ("campaign",) else list(args))
        return res.exit_code, " ".join(res.output.split())  # rich wraps long lines

    run.url = url  # type: ignore[attr-defined]
    return run


def _spec(tmp_path, data) -> str:
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(data))
    return str(path)


@pytest.mark.parametrize("spec, says", [
    ({"agent": "botorch", "agent_options": {"beta": -1}}, "agent_options.beta: must be a number above 0"),
    ({"agent": "bo", "agent_options": {"failure_model": "x"}}, "agent_options.failure_model: allowed: 'auto'"),
    ({"agent": "bo", "agent_options": {"beta": 3}}, "unknown option(s) ['beta'] for agent 'bo' on this space"),
    ({"objectives": [{"name": "zzz"}]}, "objectives.0.name: sim-xrd measures ['fom']"),
    ({"plan": "nope"}, "plan: unknown plan for sim-xrd"),
    ({"space": {"parameters": [{"name": "Q", "kind": "range", "lower": 0, "upper": 1}]}},
     "space.parameters.0.name: not a parameter of the instrument; allowed: ['A', 'B', 'C', 'temperature']"),
    ({"space": {"parameters": [{"name": "temperature", "kind": "range", "lower": 300, "upper": 400}]}},
     "space.parameters: every instrument parameter is needed; missing ['A', 'B', 'C']"),
    ([1, 2], "a campaign spec is a JSON object"),
    ({"budget": True}, "budget: Input should be a valid integer (got True)"),
    ({"space": {"parameters": [{"name": "A", "lower": 0, "upper": 1}]}},
     "space.parameters.0: a parameter needs \"kind\": one of ['range', 'choice', 'fixed']"),
    ({"approve_before_run": True}, "approve_before_run: needs people to approve each suggestion"),
    ({"agent": "bo", "agent_options": {"outcome_constraints": [{"metric": "stability", "op": ">=", "bound": 0.5}]}},
     "agent_options.outcome_constraints.0.metric: sim-xrd measures ['fom']; constrain one of those (got 'stability')"),
])
def test_a_campaign_that_could_not_run_is_refused_before_it_is_stored(cli, tmp_path, spec, says):
    if isinstance(spec, dict):
        spec = {"instrument": "sim-xrd", "budget": 2, **spec}
    code, out = cli("campaign", "run", "--spec", _spec(tmp_path, spec))
    assert code == 2 and says in out, out
    assert not (tmp_path / "cli.sqlite").exists()  # refused before the store was opened: no empty file left


def test_an_unusable_id_is_refused_before_the_store_is_made(cli, tmp_path):
    code, out = cli("campaign", "run", "--agent", "random", "--budget", "1", "--id", "a/b c")
    assert code == 2 and "campaign_id: 1-64 letters, digits, '_' or '-'" in out
    assert not (tmp_path / "cli.sqlite").exists()


def test_an_id_in_use_or_unusable_is_refused(cli, tmp_path):
    from sdl.campaign import create_campaign

    create_campaign(Store(cli.url), {"instrument": "sim-xrd", "agent": "random", "budget": 1}, "mine")
    code, out = cli("campaign", "run", "--agent", "random", "--budget", "1", "--id", "mine")
    assert code == 2 and "campaign_id: a campaign with this id exists already" in out
    code, out = cli("campaign", "run", "--agent", "random", "--budget", "1", "--id", "a/b c")
    assert code == 2 and "campaign_id: 1-64 letters, digits, '_' or '-'" in out


def test_a_store_url_that_is_no_database_is_said(cli, tmp_path):
    res = CliRunner().invoke(app, ["campaign", "list", "--store", "nonsense"])
    assert res.exit_code == 2 and "store_url: not a database URL" in res.output and "Traceback" not in res.output


def test_a_workflow_campaign_is_not_shown_as_a_plain_one(cli):
    from sdl.workflows.campaign import create_workflow_campaign
    from sdl.workflows.stations import three_station_workflow

    cid = create_workflow_campaign(Store(cli.url), {"workflow": three_station_workflow(), "budget": 1,
                                                    "agent": "random"})
    for command in ("show", "replay", "resume"):
        code, out = cli("campaign", command, cid)
        assert code == 2 and "a workflow campaign: resume it with 'sdl workflow run --resume'" in out, out


def test_bench_refuses_no_agent_and_a_file_for_a_folder(tmp_path):
    runner = CliRunner()
    res = runner.invoke(app, ["bench", "--agents", "", "--problems", "branin", "--seeds", "1"])
    assert res.exit_code == 2 and "agents: name at least one agent" in " ".join(res.output.split())
    res = runner.invoke(app, ["bench", "--agents", "random", "--problems", ",", "--seeds", "1"])
    assert res.exit_code == 2 and "--problems: name at least one problem" in " ".join(res.output.split())
    (tmp_path / "f.csv").write_text("x")
    res = runner.invoke(app, ["bench", "--agents", "random", "--problems", "branin", "--seeds", "1",
                              "--out", str(tmp_path / "f.csv")])
    assert res.exit_code == 2 and "out: a folder for bench.json and the plots; this is a file" in \
        " ".join(res.output.split())


def test_resume_drops_a_last_line_cut_short_and_refuses_a_foreign_one(tmp_path):
    from sdl.bench import CurveResult, read_runs
    from sdl.errors import InvalidInput

    one = CurveResult("random", "branin", 0, [1.0, 0.5], 0.1, "simple regret", [0, 1], 1)
    path = tmp_path / "runs.jsonl"
    path.write_text(json.dumps(one.__dict__) + "\n" + json.dumps(one.__dict__)[:40])
    assert [r.curve for r in read_runs(path)] == [[1.0, 0.5]]
    path.write_text(json.dumps({"a": 1}) + "\n" + json.dumps(one.__dict__) + "\n")
    with pytest.raises(InvalidInput, match="line 1 is not a campaign this command wrote"):
        read_runs(path)


def test_a_profile_named_on_the_command_line_must_load(cli, tmp_path):
    code, out = cli("campaign", "run", "--agent", "random", "--budget", "1", "--profile", str(tmp_path / "nope.toml"))
    assert code == 2 and "nope.tomldoesnotload" in out.replace(" ", "") and "no such file" in out  # a path wraps
    assert Store(cli.url).campaigns() == []


def test_an_error_names_a_long_value_without_printing_it_whole():
    from sdl.errors import InvalidInput

    err = InvalidInput("spec", "bad", {"workflow": "x" * 5000})
    assert len(str(err)) < 400 and str(err).endswith("... (5016 characters))")


def test_a_campaign_in_which_no_experiment_measured_anything_does_not_exit_0(cli, tmp_path):
    """A plug-in whose reading is named wrong: every run ends, none gives the objective."""
    from pathlib import Path

    good = (Path(__file__).resolve().parents[1] / "examples" / "profiles" / "ophyd_sim_profile.py").read_text()
    bad = tmp_path / "misread.py"
    bad.write_text(good.replace('"field": "det"', '"field": "nodev"'))
    code, out = cli("campaign", "run", "--profile", str(bad), "--instrument", "gauss-scan", "--agent", "random",
                    "--budget", "2")
    assert code == 1, out
    assert "none of the 2 experiments gave a value of 'intensity'; the first failed: nodev: no reading" in out


def _table(tmp_path):
    path = tmp_path / "screen.csv"
    rows = ["catalyst,temp,yield"] + [f"{c},{t},{(i * 7) % 11 + (t / 10)}"
                                      for i, (c, t) in enumerate((c, t) for c in ("Pd", "Ni", "Cu") for t in (20, 40, 60))]
    path.write_text("\n".join(rows) + "\n")
    return path


def test_a_table_pool_runs_from_the_command_line_with_objective(cli, tmp_path):
    table = _table(tmp_path)
    code, out = cli("campaign", "run", "--instrument", f"pool:{table}", "--objective", "yield:max",
                    "--budget", "4", "--agent", "random")
    assert code == 0, out
    store = Store(cli.url)
    (row,) = store.campaigns()
    assert row.spec["instrument_options"] == {"objective": "yield:max"}
    obs = store.observations(row.id)
    assert len(obs) == 4 and all(o.params["catalyst"] in ("Pd", "Ni", "Cu") for o in obs)


def test_demo_on_a_table_pool_takes_objective_and_writes_nothing_when_refused(tmp_path):
    table, out = _table(tmp_path), tmp_path / "out"
    runner = CliRunner()
    res = runner.invoke(app, ["demo", "--instrument", f"pool:{table}", "--out", str(out), "--budget", "3"])
    said = " ".join(res.output.split())
    assert res.exit_code == 2 and "instrument_options.objective" in said and "--objective" in said, said
    assert not out.exists()  # refused before the folder and its store were made
    res = runner.invoke(app, ["demo", "--instrument", f"pool:{table}", "--objective", "yield", "--budget", "3",
                              "--agent", "random", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert json.loads((out / "summary.json").read_text())["objective"]["name"] == "yield"


def test_objective_on_the_command_line_is_only_for_a_table_pool(cli, tmp_path):
    code, out = cli("campaign", "run", "--instrument", "sim-xrd", "--objective", "fom")
    assert code == 2 and "objective: --objective names a column of a table pool" in out, out
    code, out = cli("campaign", "run", "--instrument", "sim-xrd", "--categorical", "A")
    assert code == 2 and "categorical: --categorical names a column" in out, out
    code, out = cli("campaign", "run", "--instrument", "sim-xrd", "--ignore", "A")
    assert code == 2 and "ignore: --ignore names a column of a table pool" in out, out
    assert not (tmp_path / "cli.sqlite").exists()


def test_ignore_on_the_command_line_reaches_the_table_pool(cli, tmp_path):
    table = tmp_path / "notes.csv"
    table.write_text("catalyst,when,yield\n" + "\n".join(f"{c},day {i},{i + 3 * k}" for k, c in
                                                          enumerate(("Pd", "Ni", "Cu")) for i in range(4)) + "\n")
    code, out = cli("campaign", "run", "--instrument", f"pool:{table}", "--objective", "yield", "--ignore", "when",
                    "--budget", "3", "--agent", "random")
    assert code == 0, out
    store = Store(cli.url)
    (row,) = store.campaigns()
    assert row.spec["instrument_options"] == {"objective": "yield", "ignore_columns": ["when"]}
    assert all(set(o.params) == {"catalyst"} for o in store.observations(row.id))


def test_a_service_campaign_that_needs_approvals_is_not_resumed_locally(cli):
    from sdl.campaign import create_campaign

    cid = create_campaign(Store(cli.url), {"instrument": "sim-xrd", "agent": "random", "budget": 2,
                                           "approve_before_run": True})
    code, out = cli("campaign", "resume", cid)
    assert code == 2 and out.startswith("error: approve_before_run: needs people to approve"), out
    assert "Traceback" not in out and not Store(cli.url).observations(cid)


def test_an_error_naming_a_bracketed_column_is_printed_whole(tmp_path):
    """rich would take '[b]' for markup and drop it: errors are printed as text."""
    table = tmp_path / "br.csv"
    table.write_text("a,[b],y\n1,2,3\n2,3,4\n")
    res = CliRunner().invoke(app, ["bench", "--pool", str(table), "--objective", "[c]"])
    said = " ".join(res.output.split())
    assert res.exit_code == 2 and "'[c]' is not a column of br.csv; columns: ['a', '[b]', 'y']" in said, said


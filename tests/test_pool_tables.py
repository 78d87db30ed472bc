"""Any CSV is a pool: categorical, integer and continuous inputs, several objectives, clear
errors; through ``sdl bench --pool`` and through a campaign (instrument ``pool:<file.csv>``)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from sdl.errors import InvalidInput
from sdl.sim_devices.pool import PoolModel

CATALYSTS = ["Pd(OAc)2", "PdCl2", "Ni(cod)2"]
SOLVENTS = ["CCO", "CC(C)=O", "ClCCl", "c1ccccc1"]  # SMILES


def _categorical_csv(path, bom=True):
    rows = ["catalyst,solvent,ligand,yield"]
    for i, c in enumerate(CATALYSTS):
        for j, s in enumerate(SOLVENTS):
            for k, lig in enumerate(["L1", "L2"]):
                rows.append(f"{c},{s},{lig},{10 + 20 * i + 5 * j + k}")
    rows.append(rows[1])  # a repeated row
    rows.insert(6, rows[0])  # a header line again (concatenated files)
    rows.append("PdCl2,CCO,L1,")  # no yield: dropped
    path.write_text("\ufeff" * bom + "\n".join(rows) + "\n", encoding="utf-8")
    return path


def _mixed_csv(path, n=40):
    rng = np.random.default_rng(0)
    lines = ["temperature (C),equiv,base,yield,cost"]
    for i in range(n):
        t, e, b = rng.uniform(20, 120), int(rng.integers(1, 5)), ["K2CO3", "Cs2CO3", "DBU"][i % 3]
        lines.append(f"{t:.2f},{e},{b},{50 - ((t - 80) / 20) ** 2 + 5 * e + 10 * (b == 'DBU'):.3f},{2 * e + 5 * (b == 'Cs2CO3')}")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_categorical_table_with_bom_repeats_and_missing_values(tmp_path):
    pool = PoolModel.from_csv(_categorical_csv(tmp_path / "cat.csv"), objectives=["yield:max"])
    assert pool.inputs == ["catalyst", "solvent", "ligand"]  # the BOM is not part of the first name
    assert [c.kind for c in pool.columns] == ["categorical"] * 3
    assert len(pool) == 24 and pool.repeats.sum() == 25  # the repeat is averaged into its point
    notes = " ".join(pool.notes)
    assert "SMILES" in notes and "repeat" in notes and "without a value of 'yield'" in notes
    assert "repeats the header" in notes
    space = pool.search_space()
    assert space.parameter("solvent").values == SOLVENTS[:1] + SOLVENTS[1:] or set(space.parameter("solvent").values) == set(SOLVENTS)
    best, value = pool.best()
    assert best["catalyst"] == "Ni(cod)2" and best["solvent"] == "c1ccccc1" and value == 10 + 40 + 15 + 1
    assert pool.index_of(best) == pool.index_of({**best, "catalyst": 2.0})  # a label or its code
    with pytest.raises(InvalidInput, match="must be one of"):
        pool.index_of({**best, "catalyst": "Rh"})


def test_mixed_table_types_and_few_levels(tmp_path):
    pool = PoolModel.from_csv(_mixed_csv(tmp_path / "mixed.csv"), objectives=["yield", "cost:min"])
    kinds = {c.name: c.kind for c in pool.columns}
    assert kinds == {"temperature": "continuous", "equiv": "integer", "base": "categorical"}
    assert any("'equiv': numeric with only 4 levels" in n for n in pool.notes)
    assert [o.direction for o in pool.objectives] == ["maximize", "minimize"]
    assert pool.all_values.shape == (len(pool), 2) and pool.units["temperature"] == "C"
    forced = PoolModel.from_csv(tmp_path / "mixed.csv", objectives=["yield"], categorical=["equiv"],
                                input_columns=["temperature (C)", "equiv", "base"])
    assert forced.search_space().parameter("equiv").values == ["1", "2", "3", "4"]


@pytest.mark.parametrize("kwargs, field, match", [
    ({"objectives": ["nope"]}, "objective", "'nope' is not a column"),
    ({"objectives": ["yield"], "input_columns": ["base", "colour"]}, "input_columns", "'colour' is not a column"),
    ({"objectives": ["base"]}, "objective", "column 'base' cannot be read"),
    ({"objectives": ["yield", "cost"], "categorical": ["cost"]}, "categorical", "not an input column"),
    ({"objectives": ["yield:best"]}, "objective", "'best' after 'yield' is not a direction; allowed: 'min', 'max'"),
])
def test_bad_columns_are_named(tmp_path, kwargs, field, match):
    with pytest.raises(InvalidInput, match=match) as err:
        PoolModel.from_csv(_mixed_csv(tmp_path / "mixed.csv"), **kwargs)
    assert err.value.field == field


def test_unreadable_numeric_column_is_named(tmp_path):
    p = _mixed_csv(tmp_path / "m.csv")
    lines = p.read_text().splitlines()
    lines[5] = "n/a," + lines[5].split(",", 1)[1]
    p.write_text("\n".join(lines) + "\n")
    with pytest.raises(InvalidInput, match=r"column 'temperature \(C\)' cannot be read: .* line 6 holds 'n/a'"):
        PoolModel.from_csv(p, objectives=["yield"])


def test_sdl_bench_pool_runs_categorical_and_mixed_tables(tmp_path):
    from sdl.cli import app

    cat, mixed = _categorical_csv(tmp_path / "cat.csv"), _mixed_csv(tmp_path / "mixed.csv")
    runner = CliRunner()
    res = runner.invoke(app, ["bench", "--pool", str(cat), "--objective", "yield:max", "--agents", "bo,random",
                              "--seeds", "1", "--budget", "8", "--workers", "1", "--out", str(tmp_path / "a")])
    assert res.exit_code == 0, res.output
    assert "categorical (4 SMILES strings)" in res.output
    rows = json.loads((tmp_path / "a" / "bench.json").read_text())["summary"]
    assert {r["problem"] for r in rows} == {"cat"} and all("top5@8" in r for r in rows)
    res = runner.invoke(app, ["bench", "--pool", str(mixed), "--objective", "yield:max", "--objective", "cost:min",
                              "--agents", "bo,random", "--seeds", "1", "--budget", "7", "--workers", "1",
                              "--out", str(tmp_path / "b")])
    assert res.exit_code == 0, res.output
    saved = json.loads((tmp_path / "b" / "bench.json").read_text())
    assert saved["summary"][0]["metric"] == "hypervolume fraction"
    assert all(0 <= v <= 1 for r in saved["runs"] for v in r["curve"])
    res = runner.invoke(app, ["bench", "--pool", str(mixed), "--objective", "colour", "--out", str(tmp_path / "c")])
    assert res.exit_code != 0 and "'colour' is not a column" in res.output


def test_a_budget_the_pool_cannot_hold_is_named_before_and_from_worker_processes(tmp_path):
    """``sdl bench`` refuses it before any campaign starts (no progress bar, no output folder).
    Checked in each campaign too, in the worker processes of a process pool: the error comes
    back as itself (it pickles), not as a broken pool."""
    from sdl.bench import run_benchmark
    from sdl.cli import app
    from sdl.pools import PoolSpec

    small = tmp_path / "small.csv"
    small.write_text("a,b,y\n1,2,3\n2,3,4\n3,1,1\n4,4,2\n5,5,7\n6,1,3\n")
    runner = CliRunner()
    res = runner.invoke(app, ["bench", "--pool", str(small), "--objective", "y", "--agents", "random",
                              "--seeds", "2", "--budget", "7", "--workers", "2", "--out", str(tmp_path / "a")])
    assert res.exit_code == 2
    text = " ".join(res.output.split())  # rich wraps long lines
    assert "budget: on pool 'small': more than its 5 random starts and at most its 6 distinct points (got 7)" in text
    assert "campaigns" not in text and not (tmp_path / "a").exists()
    spec = PoolSpec(path=str(small), objectives=("y",))
    with pytest.raises(InvalidInput, match="at most its 6 distinct points"):
        run_benchmark(["random"], [spec], [0, 1], budget=7, workers=2)
    twice = tmp_path / "twice.csv"
    twice.write_text("a,b,y\n1,2,3\n1,2,3\n2,3,4\n")
    with pytest.raises(InvalidInput, match="'twice' has 2 distinct points: too few for 5 random starts"):
        from sdl.agents.benchmarking import run_pool_campaign

        run_pool_campaign("random", PoolModel.from_csv(twice, objectives=["y"]), seed=0, budget=6)


@pytest.mark.parametrize("agent", ["bo", "random"])
def test_campaign_on_categorical_and_mixed_tables(store, tmp_path, agent):
    from sdl.campaign import CampaignRunner, create_campaign

    for path, objective in ((_categorical_csv(tmp_path / "cat.csv"), "yield:max"),
                            (_mixed_csv(tmp_path / "mixed.csv"), "cost:min")):
        cid = create_campaign(store, {"instrument": f"pool:{path}", "instrument_options": {"objective": objective},
                                      "agent": agent, "budget": 7})
        assert CampaignRunner(store, cid).run() == "completed"
        obs = store.observations(cid)
        assert len(obs) == 7 and all(o.ok for o in obs)
        name = objective.split(":")[0]
        for o in obs:
            assert o.values[name] == pytest.approx(o.extra["truth"])
            assert isinstance(o.params["base" if "mixed" in str(path) else "catalyst"], str)


def test_a_missing_or_unreadable_table_is_said_first(tmp_path):
    from sdl.cli import app
    from sdl.instruments import make_instrument

    with pytest.raises(InvalidInput, match="instrument: no such table file"):
        make_instrument(f"pool:{tmp_path / 'missing.csv'}")  # before the missing objective option
    binary = tmp_path / "bin.csv"
    binary.write_bytes(b"\xff\xfe\x00a,b\n")
    res = CliRunner().invoke(app, ["bench", "--pool", str(binary), "--objective", "y", "--agents", "random",
                                   "--seeds", "1", "--budget", "6"])
    assert res.exit_code == 2 and "bin.csv is not UTF-8 text" in res.output


def test_a_campaign_that_measures_every_pool_point_completes(store, tmp_path):
    from sdl.campaign import CampaignRunner, create_campaign

    small = tmp_path / "small.csv"
    small.write_text("a,b,y\n1,2,3\n2,3,4\n3,1,1\n4,4,2\n5,5,7\n6,1,3\n")
    cid = create_campaign(store, {"instrument": f"pool:{small}", "instrument_options": {"objective": "y"},
                                  "agent": "bo", "budget": 10})
    assert CampaignRunner(store, cid).run() == "completed"
    assert len({o.params["a"] for o in store.observations(cid)}) == 6
    assert store.campaign(cid).message == "every one of the pool's 6 points measured (budget 10)"


def test_campaign_refuses_several_objectives_and_unknown_options(store, tmp_path):
    from sdl.instruments import make_instrument

    path = _mixed_csv(tmp_path / "mixed.csv")
    with pytest.raises(InvalidInput, match="one objective"):
        make_instrument(f"pool:{path}", options={"objective": ["yield", "cost:min"]})
    with pytest.raises(InvalidInput, match="unknown option"):
        make_instrument(f"pool:{path}", options={"objective": "yield", "colour": 1})


def test_suite_names_and_resume_keeps_finished_campaigns(tmp_path):
    from sdl.bench import bench_command
    from sdl.pools import OLYMPUS, SUITE, load_pool

    assert len(OLYMPUS) == 12 and len(SUITE) == 14
    lnp = load_pool("lnp3")
    assert len(lnp.objectives) == 3 and all(c.kind == "categorical" for c in lnp.columns)
    vap = load_pool("vapdiff_crystal")
    assert set(vap.values) == {0.0, 1.0, 2.0, 3.0}  # the ordinal score, ranked
    rows, paths = bench_command(["random", "sobol"], ["snar", "alkox"], [0, 1], budget=8, workers=1, out=tmp_path)
    saved = json.loads(paths["json"].read_text())
    assert set(saved["aggregate"]) == {"8"} and saved["aggregate"]["8"]["problems"] == 2
    lines = (tmp_path / "runs.jsonl").read_text().splitlines()
    assert len(lines) == 8
    before = paths["json"].read_text()
    bench_command(["random", "sobol"], ["snar", "alkox"], [0, 1], budget=8, workers=1, out=tmp_path, resume=True)
    assert len((tmp_path / "runs.jsonl").read_text().splitlines()) == 8  # nothing ran again
    assert json.loads(paths["json"].read_text())["summary"] == json.loads(before)["summary"]


def test_paired_outcome_and_mean_rank():
    from sdl.bench import CurveResult
    from sdl.bench_stats import aggregate, paired_outcome

    assert paired_outcome([1.0] * 10, [0.0] * 10)[0] == "win"
    assert paired_outcome([0.0] * 10, [1.0] * 10)[0] == "loss"
    assert paired_outcome([0.5] * 10, [0.5] * 10) == ("tie", None)
    assert paired_outcome([1, 0, 1, 0], [0, 1, 0, 1])[0] == "tie"
    res = [CurveResult(a, p, s, [v + 0.01 * s] * 3, 1.0) for p in ("x", "y") for s in range(8)
           for a, v in (("good", 0.9), ("bad", 0.1))]
    agg = aggregate(res, [3])["3"]
    assert agg["mean_rank"] == {"bad": 2.0, "good": 1.0}
    assert agg["vs"]["good"]["bad"]["win"] == 2 and agg["vs"]["bad"]["good"]["losses_on"] == ["x", "y"]


def test_table_paths_can_be_confined(tmp_path, monkeypatch):
    from sdl.instruments import make_instrument

    path = _mixed_csv(tmp_path / "mixed.csv")
    monkeypatch.setenv("SDL_POOL_DIRS", str(tmp_path / "elsewhere"))
    with pytest.raises(InvalidInput, match="SDL_POOL_DIRS"):
        make_instrument(f"pool:{path}", options={"objective": "yield"})
    monkeypatch.setenv("SDL_POOL_DIRS", str(tmp_path))
    assert len(make_instrument(f"pool:{path}", options={"objective": "yield"}).space.pool) == 40


def _lab_notebook_csv(path):
    """A table as a lab keeps it: a sample id, a date, a comment, conditions measured twice."""
    lines = ["sample_id,date,solvent,temp_C,yield,comment"]
    k = 0
    for rep in range(2):
        for s, bonus in (("water", 0), ("ethanol", 10), ("DMF", 15)):
            for t in (20, 40, 60, 80):
                lines.append(f"S{k:03d},2026-11-{1 + k % 9:02d},{s},{t},{40 + bonus + t / 4 + rep:.1f},"
                             f"{'cloudy' if (k + rep) % 2 else 'clear'}")
                k += 1
    path.write_text("\n".join(lines) + "\n")
    return path


def test_an_identifier_column_and_ignored_columns_are_not_inputs(tmp_path):
    path = _lab_notebook_csv(tmp_path / "notebook.csv")
    pool = PoolModel.from_csv(path, objectives=["yield"], ignore_columns=["comment"])
    assert pool.inputs == ["solvent", "temp_c"]
    assert len(pool) == 12 and list(pool.repeats) == [2] * 12  # the two measurements of a point are averaged
    notes = " ".join(pool.notes)
    assert "'sample_id': a different label on every row (an identifier, e.g. 'S000'): not an input" in notes
    assert "not inputs (ignore_columns): ['comment']" in notes
    assert "'date': dates or times (e.g. '2026-11-01'), when a row was measured, not what: not an input" in notes
    assert pool.best() == ({"solvent": "DMF", "temp_c": 80.0}, pytest.approx(75.5))
    # without ignore_columns the comment is a categorical input, which keeps repeats apart
    kept = PoolModel.from_csv(path, objectives=["yield"])
    assert "comment" in kept.inputs and len(kept) == 24
    # named in input_columns, an identifier is an input like any other
    named = PoolModel.from_csv(path, objectives=["yield"], input_columns=["sample_id", "temp_C"])
    assert named.inputs == ["sample_id", "temp_c"] and len(named) == 24


@pytest.mark.parametrize("kwargs, match", [
    ({"ignore_columns": ["colour"]}, "'colour' is not a column of notebook.csv; columns: \\['sample_id'"),
    ({"ignore_columns": ["yield"]}, "'yield' is an objective"),
    ({"ignore_columns": ["date"], "input_columns": ["solvent"]}, "give input_columns .* or ignore_columns"),
])
def test_bad_ignored_columns_are_named(tmp_path, kwargs, match):
    with pytest.raises(InvalidInput, match=match) as err:
        PoolModel.from_csv(_lab_notebook_csv(tmp_path / "notebook.csv"), objectives=["yield"], **kwargs)
    assert err.value.field == "ignore_columns"


def test_a_table_whose_only_varying_column_is_an_identifier_says_so(tmp_path):
    path = tmp_path / "molecules.csv"
    path.write_text("smiles,score\n" + "\n".join(f"{'C' * (i + 1)}O,{i % 5}" for i in range(12)) + "\n")
    with pytest.raises(InvalidInput, match="'smiles': a different label on every row or dates, taken for an "
                                           "identifier; name it in input_columns"):
        PoolModel.from_csv(path, objectives=["score"])
    assert len(PoolModel.from_csv(path, objectives=["score"], input_columns=["smiles"])) == 12


def test_input_and_ignore_through_sdl_bench_and_a_campaign(store, tmp_path):
    from sdl.campaign import CampaignRunner, create_campaign
    from sdl.cli import app
    from sdl.instruments import make_instrument

    path = _lab_notebook_csv(tmp_path / "notebook.csv")
    runner = CliRunner()
    common = ["bench", "--pool", str(path), "--objective", "yield", "--agents", "random", "--seeds", "1",
              "--budget", "8", "--workers", "1"]
    res = runner.invoke(app, [*common, "--ignore", "date", "--ignore", "comment", "--out", str(tmp_path / "a")])
    assert res.exit_code == 0, res.output
    assert "12 points (24 rows)" in res.output and "not inputs (ignore_columns)" in res.output
    res = runner.invoke(app, [*common, "--input", "solvent", "--input", "temp_C", "--out", str(tmp_path / "b")])
    assert res.exit_code == 0, res.output
    assert "12 points (24 rows)" in res.output and "sample_id" not in res.output and "date" not in res.output
    res = runner.invoke(app, [*common, "--ignore", "colour", "--out", str(tmp_path / "c")])
    assert res.exit_code == 2 and "'colour' is not a column" in res.output
    res = runner.invoke(app, ["bench", "--ignore", "date"])
    assert res.exit_code == 2 and "--ignore names a column of a --pool table" in res.output

    cid = create_campaign(store, {"instrument": f"pool:{path}", "agent": "random", "budget": 6,
                                  "instrument_options": {"objective": "yield", "ignore_columns": ["date", "comment"]}})
    assert CampaignRunner(store, cid).run() == "completed"
    assert all(set(o.params) == {"solvent", "temp_c"} for o in store.observations(cid))
    with pytest.raises(InvalidInput, match="instrument_options.ignore_columns: a list of column names"):
        make_instrument(f"pool:{path}", options={"objective": "yield", "ignore_columns": "date"})


@pytest.mark.parametrize("separator, decimal", [(";", ","), ("\t", ".")])
def test_semicolon_and_tab_separated_tables_with_decimal_commas(tmp_path, separator, decimal):
    """Spreadsheets of many locales export ';'-separated CSV with decimal commas."""
    from sdl.bench import table_pools

    src = PoolModel.from_csv(_mixed_csv(tmp_path / "mixed.csv"), objectives=["yield"], ignore_columns=["cost"])
    lines = (tmp_path / "mixed.csv").read_text().splitlines()
    local = tmp_path / "local.csv"
    local.write_text("\n".join([lines[0].replace(",", separator)]
                               + [separator.join(c.replace(".", decimal) for c in line.split(","))
                                  for line in lines[1:]]) + "\n")
    pool = PoolModel.from_csv(local, objectives=["yield"], ignore_columns=["cost"])
    assert pool.inputs == src.inputs and [c.kind for c in pool.columns] == [c.kind for c in src.columns]
    np.testing.assert_allclose(pool.points, src.points)
    np.testing.assert_allclose(pool.values, src.values)
    said = {";": "read as ';'-separated, 80 decimal comma(s) read as points", "\t": "read as tab-separated"}
    assert said[separator] in pool.notes
    other = _mixed_csv(tmp_path / "other.csv")  # two tables: --categorical names the columns of each one's header
    (spec, _) = table_pools([local, other], ["yield"], categorical=["equiv"], ignore=["cost"])
    assert spec.categorical == ("equiv",) and spec.load().search_space().parameter("equiv").values == ["1", "2", "3", "4"]


def test_a_quoted_cell_may_hold_a_newline_and_a_separator(tmp_path):
    path = tmp_path / "quoted.csv"
    path.write_text('solvent,temp,yield,comment\n' + "".join(
        f'{s},{t},{i + t / 10},"line one\nline two, with a comma"\n' for i, s in enumerate(("water", "DMF"))
        for t in (20, 40, 60)))
    pool = PoolModel.from_csv(path, objectives=["yield"], ignore_columns=["comment"])
    assert len(pool) == 6 and pool.inputs == ["solvent", "temp"]

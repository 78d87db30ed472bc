"""Instruments as plug-ins: the registry (entry points, profiles), typed plans, stock
reductions, and the clear errors of bad plug-ins. In-process only (fast)."""

from __future__ import annotations

import math
import os
import textwrap
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import pytest
from typer.testing import CliRunner

from sdl import registry as reg_mod
from sdl.errors import InvalidInput
from sdl.plugin import Arg, Instrument, PluginError
from sdl.reduction import reduction_spec, stock_value
from sdl.space import Objective, RangeParameter, SearchSpace

ROOT = Path(__file__).resolve().parents[1]
PY_PROFILE = ROOT / "examples" / "profiles" / "ophyd_sim_profile.py"


@pytest.fixture(autouse=True)
def fresh_registry(monkeypatch):
    monkeypatch.delenv("SDL_PROFILE", raising=False)
    reg_mod.reset()
    yield
    reg_mod.reset()


def _space():
    return SearchSpace(parameters=[RangeParameter(name="x", lower=-1, upper=1)])


def _instrument(**kw):
    def plan(x: float, *, md=None):
        yield from ()

    args = dict(name="t", description="", space=_space(), objectives=[Objective(name="y")],
                reduction=reduction_spec("scalar", field="d", objective="y"), plans={"p": plan})
    args.update(kw)
    return Instrument(**args)


# ------------------------------------------------------------------ built-ins
def test_builtins_come_through_sdls_own_entry_points():
    r = reg_mod.registry()
    assert {"sim-xrd", "pool:p3ht", "pool:agnp"} <= set(r.names("instruments"))
    for name in ("sim-xrd", "pool:p3ht"):
        src = r.source("instruments", name)
        assert src.startswith("entry point sdl.instruments:") and "(sdl " in src, src
    assert r.source("reductions", "xrd_target_phase").startswith("entry point sdl.reductions:")
    inst = r.build("sim-xrd")
    assert inst.plan_names == ["autonomous_step", "exposure_series"]
    assert inst.plan_schema("exposure_series")["properties"]["repeats"]["maximum"] == 20


def test_core_names_no_instrument():
    """The store, campaign runner, service, workers and backends never special-case one."""
    core = [ROOT / "sdl" / f for f in ("store.py", "campaign.py", "replay.py", "reduction.py", "registry.py",
                                        "plugin.py")]
    core += sorted((ROOT / "sdl" / "service").rglob("*.py")) + sorted((ROOT / "sdl" / "backends").glob("*.py"))
    # what runs when nothing is named (the demo's lab) is declared by the built-in plug-ins
    from sdl.builtins import DEFAULT_INSTRUMENT, DEFAULT_SERVICE_INSTRUMENTS
    from sdl.campaign import CampaignSpec
    from sdl.service.settings import ServiceSettings

    assert CampaignSpec().instrument == DEFAULT_INSTRUMENT
    assert [i.name for i in ServiceSettings().instruments] == list(DEFAULT_SERVICE_INSTRUMENTS)
    allowed = {"crashtest.py": None, "testing.py": None}  # test kits, not the core
    for path in core:
        ok = allowed.get(path.name, [])
        if ok is None:
            continue
        for line in path.read_text().splitlines():
            if ("sim-xrd" in line or '"pool:' in line or "startswith(\"pool" in line) and not any(a in line
                                                                                                for a in ok):
                pytest.fail(f"{path.name} names an instrument: {line.strip()}")


# ----------------------------------------------------------- plans and schemas
def test_plan_options_are_typed_from_the_signature_and_checked():
    def plan(x: float, *, exposure: Annotated[float, Arg(0, 5, units="s", open_lower=True)] = 0.5,
             mode: Literal["fast", "fine"] = "fast", n: int = 2, md=None):
        """Measure at x."""
        yield from ()

    inst = _instrument(plans={"measure": plan})
    schema = inst.plan_schema("measure")
    assert schema["properties"]["exposure"] == {"type": "number", "exclusiveMinimum": 0, "maximum": 5,
                                                "default": 0.5, "x-units": "s", "description": "exposure (s)"}
    assert schema["properties"]["mode"]["enum"] == ["fast", "fine"]
    assert schema["required"] == ["x"] and schema["description"] == "Measure at x."
    assert inst.validate_request("measure", {"x": 0.2, "n": 3}) == {"x": 0.2, "exposure": 0.5, "mode": "fast", "n": 3}
    with pytest.raises(InvalidInput, match=r"exposure: out of range: allowed \(0, 5\] s"):
        inst.validate_request("measure", {"x": 0.2, "exposure": 0})
    with pytest.raises(InvalidInput, match="mode: must be one of"):
        inst.validate_request("measure", {"x": 0.2, "mode": "slow"})
    with pytest.raises(InvalidInput, match="plan: unknown plan for t; allowed: \\['measure'\\]"):
        inst.validate_request("nope", {"x": 0.2})


def test_bad_plugins_get_one_clear_error():
    def untyped(x, *, speed=1, md=None):
        yield from ()

    with pytest.raises(PluginError, match=r"plug-in 't': plans.p.speed: cannot type it: no annotation; allowed: "):
        _instrument(plans={"p": untyped})

    def no_md(x: float):
        yield from ()

    with pytest.raises(PluginError, match=r"plans.p: must accept `md`"):
        _instrument(plans={"p": no_md})

    def no_default(x: float, *, gain: float, md=None):
        yield from ()

    with pytest.raises(PluginError, match=r"plans.p.gain: an option .* needs a default"):
        _instrument(plans={"p": no_default})
    with pytest.raises(PluginError, match=r"plug-in 't': reduction: missing.*allowed reductions: .*readings"):
        _instrument(reduction=None)
    with pytest.raises(PluginError, match=r"reduction.name: unknown reduction 'nope'"):
        _instrument(reduction={"name": "nope", "params": {}})

    def other(*, md=None):
        yield from ()

    with pytest.raises(PluginError, match=r"parameters \['x'\] are neither plan arguments nor bound to a device"):
        _instrument(plans={"p": other})


def test_plugin_mistakes_found_by_an_audit_get_one_clear_error():
    def with_mode(x: float, *, mode: Literal["a", "b"] = "c", md=None):
        yield from ()

    with pytest.raises(PluginError, match=r"plans.p.mode: the default 'c' is not one of \['a', 'b'\]"):
        _instrument(plans={"p": with_mode})

    def limits_swapped(x: float, *, repeats: Annotated[int, Arg(10, 1)] = 5, md=None):
        yield from ()

    with pytest.raises(PluginError, match=r"plans.p.repeats: Arg lower \(10\) is above upper \(1\)"):
        _instrument(plans={"p": limits_swapped})

    def nan_limit(x: float, *, gain: Annotated[float, Arg(float("nan"), 1.0)] = 0.5, md=None):
        yield from ()

    with pytest.raises(PluginError, match=r"plans.p.gain: Arg lower must be a finite number"):
        _instrument(plans={"p": nan_limit})

    def text_limits(x: float, *, label: Annotated[str, Arg(1, 10)] = "a", md=None):
        yield from ()

    with pytest.raises(PluginError, match=r"plans.p.label: Arg limits apply to numbers, not str"):
        _instrument(plans={"p": text_limits})
    readings = reduction_spec("readings", objectives=[{"name": "intensity", "field": "det", "op": "mean"}])
    with pytest.raises(PluginError, match=r"objectives.0.name: 'counts' is not produced by reduction 'readings'; "
                                          r"it produces \['intensity'\]"):
        _instrument(reduction=readings, objectives=[Objective(name="counts")])
    with pytest.raises(ValueError, match="lower and upper must be finite numbers"):
        RangeParameter(name="x", lower=-math.inf, upper=1)


def test_a_plan_that_is_no_plan_is_named_when_it_runs():
    """A plain function may return a plan, so only running it tells: the run fails naming the
    plug-in and the plan, not with bluesky's "'int' object is not iterable"."""
    def not_a_plan(x: float, *, md=None):
        return 42

    from sdl.models import Provenance, Suggestion

    inst = _instrument(plans={"p": not_a_plan})
    with pytest.raises(PluginError, match=r"plans.p: must be a bluesky plan: .* it returned int"):
        list(inst.step_plan(Suggestion(params={"x": 0.1}, provenance=Provenance(agent="test")), md={}))


def test_a_reduction_that_raises_or_returns_no_numbers_is_named():
    from sdl.reduction import REDUCERS, reduce_run

    start = {"reduction": {"name": "audit-red", "params": {}}, "uid": "s"}
    docs = [("start", start), ("descriptor", {"uid": "d", "name": "primary", "run_start": "s"}),
            ("event", {"descriptor": "d", "data": {"det": 1.0}, "seq_num": 1})]
    for body, says in ((lambda s, e, p: {}["det2"], "'audit-red' raised KeyError: 'det2'"),
                       (lambda s, e, p: 3.0, "'audit-red' must return a dict of objective name -> number; "
                                             "it returned float"),
                       (lambda s, e, p: {"y": "high"}, "it returned dict holding 'high'"),
                       (lambda s, e, p: {"y": np.int64(3), "z": np.float32(0.5)}, None)):  # numpy's numbers count
        REDUCERS["audit-red"] = body
        try:
            if says is None:
                assert reduce_run(docs) == {"y": 3.0, "z": 0.5}
                continue
            with pytest.raises(InvalidInput, match=says):
                reduce_run(docs)
        finally:
            del REDUCERS["audit-red"]


# ------------------------------------------------------------ stock reductions
def test_stock_reductions_of_a_waveform_and_an_image():
    x = np.arange(200.0)
    y = 5 + 100 * np.exp(-((x - 80.0) ** 2) / (2 * 6.0 ** 2))
    ev = {"data": {"w": y.tolist(), "a": 6.0, "b": 3.0}}
    assert stock_value("centroid", ev, "w", {}) == pytest.approx(80.0, abs=1e-6)
    assert stock_value("fwhm", ev, "w", {}) == pytest.approx(2.3548 * 6.0, rel=0.01)
    assert stock_value("fwhm", ev, "w", {"step": 0.5}) == pytest.approx(2.3548 * 3.0, rel=0.01)
    assert stock_value("ratio", ev, "a", {"denominator": "b"}) == 2.0
    img = np.outer(np.exp(-((np.arange(40) - 10.0) ** 2) / 8), np.exp(-((np.arange(50) - 30.0) ** 2) / 18))
    ev = {"data": {"img": img.ravel().tolist()}}
    assert stock_value("centroid", ev, "img", {"shape": [40, 50], "axis": 0}) == pytest.approx(30.0, abs=0.01)
    assert stock_value("centroid", ev, "img", {"shape": [40, 50], "axis": 1}) == pytest.approx(10.0, abs=0.01)
    assert stock_value("sum", ev, "img", {}) == pytest.approx(img.sum())


# ------------------------------------------------------------- entry points
def _fake_distribution(tmp_path: Path, name: str, entry_points: str) -> Path:
    d = tmp_path / f"{name}-0.1.dist-info"
    d.mkdir(parents=True)
    (d / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (d / "entry_points.txt").write_text(textwrap.dedent(entry_points))
    return tmp_path


def test_a_broken_entry_point_is_reported_and_the_others_work(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(_fake_distribution(tmp_path, "broken_plugin", """
        [sdl.instruments]
        broken-station = broken_plugin_missing_module:build
        """)))
    reg_mod.reset()
    r = reg_mod.registry()
    assert "broken-station" in r.names("instruments")
    with pytest.raises(InvalidInput) as err:
        r.build("broken-station")
    msg = str(err.value)
    assert "entry point sdl.instruments: broken-station = broken_plugin_missing_module:build (broken_plugin 0.1)" \
        in msg and "ModuleNotFoundError" in msg
    assert r.build("sim-xrd").name == "sim-xrd"
    from sdl.cli import app

    out = CliRunner().invoke(app, ["instruments", "list", "--json"])
    assert out.exit_code == 1
    assert "sim-xrd" in out.output and "broken-station" in out.output and "ModuleNotFoundError" in out.output


# ------------------------------------------------------------------ profiles
def test_python_profile_instrument_runs_a_campaign_that_replays(tmp_path, monkeypatch, store):
    from sdl.campaign import CampaignRunner, create_campaign
    from sdl.replay import replay

    monkeypatch.setenv("SDL_PROFILE", str(PY_PROFILE))
    reg_mod.reset()
    r = reg_mod.registry()
    assert r.source("instruments", "gauss-scan") == f"profile {PY_PROFILE}"
    cid = create_campaign(store, {"instrument": "gauss-scan", "agent": "sobol", "budget": 6, "seed": 1})
    assert CampaignRunner(store, cid).run() == "completed"
    obs = store.observations(cid)
    assert len(obs) == 6 and all(o.ok for o in obs)
    for o in obs:  # the detector read at the moved motor: the reduction gives the simulated truth
        assert o.values["intensity"] == pytest.approx(1000 * math.exp(-((o.params["x"] - 1.7) ** 2) / 4.5), rel=1e-6)
    start = store.documents(obs[0].run_uid)[0][1]
    assert start["instrument"] == "gauss-scan" and start["reduction"]["name"] == "readings"
    assert all(row["match"] for row in replay(store, cid))


def test_profile_option_on_every_command_and_a_missing_profile_is_reported(tmp_path):
    import typer.main

    from sdl.cli import app

    group = typer.main.get_command(app)

    def walk(cmd, path=()):
        if hasattr(cmd, "commands"):
            for n, c in cmd.commands.items():
                yield from walk(c, path + (n,))
        else:
            yield path, cmd

    commands = list(walk(group))
    assert len(commands) > 10
    for path, cmd in commands:
        assert any("--profile" in p.opts for p in cmd.params), f"sdl {' '.join(path)} has no --profile"
    out = CliRunner().invoke(app, ["instruments", "list", "--profile", str(tmp_path / "nope.toml")])
    assert out.exit_code == 1 and "no such file" in out.output


def test_toml_profile_errors_name_the_instrument_the_key_and_what_is_allowed(tmp_path):
    from sdl.profile_toml import parse_profile

    base = """
        [instrument.pin.devices.m]
        class = "ophyd.EpicsSignal"
        pv = "X:mtr"
        [instrument.pin.devices.d]
        class = "ophyd.EpicsSignalRO"
        pv = "X:det"
        [[instrument.pin.parameters]]
        name = "x"
        device = "m"
        lower = -1
        upper = 1
        [[instrument.pin.objectives]]
        name = "i"
        reading = "d"
        """
    p = tmp_path / "b.toml"
    p.write_text(textwrap.dedent(base))
    spec = parse_profile(p)
    assert spec.instrument["pin"].parameters[0].device == "m"
    cases = {
        "[instrument.pin]\nsettle = 1\n" + textwrap.dedent(base): r"plug-in 'pin': b.toml: settle: unknown key; allowed: \[.*'settle_s'",
        base.replace('pv = "X:det"', 'pv = "X:det"\ncolour = 1'): r"devices.d.colour: unknown key; allowed: "
                                                                    r"\['class', 'prefix'",
        base.replace('device = "m"', 'device = "d"'): r"parameters.0.device: 'd' is ophyd.EpicsSignalRO, not movable",
        base.replace('reading = "d"', 'reading = "q"'): r"objectives.0.reading: unknown device 'q'; allowed: \['d', "
                                                        r"'m'\]",
        base.replace('pv = "X:mtr"', 'pv = "X:mtr"\ntrigger_pv = "X:go"'): r"devices.m: trigger_pv belongs to a "
                                                                       r"detector",
        base.replace('"ophyd.EpicsSignalRO"', '"ophyd.Thing"'): r"devices.d.class: not allowed; input should be "
                                                                 r"'ophyd.EpicsMotor'",
        # said when the file is read, before any device connects
        base.replace("lower = -1", "lower = 40"): r"plug-in 'pin': b.toml: parameters.0: lower \(40\) must be "
                                                  r"below upper \(1\)",
        base.replace("lower = -1", "lower = -inf"): r"parameters.0: lower and upper must be finite numbers",
        base + '[[instrument.pin.objectives]]\nname = "i"\nreading = "d"\n': r"objectives.1.name: 'i' is named twice",
        base + ('[[instrument.pin.parameters]]\nname = "y"\ndevice = "m"\nlower = 0\nupper = 1\n'):
            r"parameters.1.device: 'm' already moves parameter 'x'",
        base.replace("lower = -1", 'lower = "-1"'): r"parameters.0.lower: Input should be a valid number \(got '-1': a number is written "
                                                    r"without quotes\)",
        base.replace("upper = 1", "upper = true"): r"parameters.0.upper: Input should be a valid number \(got True\)",
        base + '[instrument.pin.suspender]\nreading = "d"\nbelow = 5\nresume_above = 2\n':
            r"suspender: resume_above \(2\) must be at least below \(5\)",
        base + '[instrument.pin.suspender]\nreading = "d"\nbelow = nan\n': r"suspender: below and resume_above must "
                                                                         r"be finite",
    }
    for text, pattern in cases.items():
        p.write_text(textwrap.dedent(text))
        with pytest.raises(PluginError, match=pattern):
            parse_profile(p)


# --------------------------------------------------------- instrument conformance
def test_instrument_conformance_kit_passes_a_good_plugin_and_names_what_a_bad_one_lacks(monkeypatch):
    import bluesky.plans as bp
    from ophyd.sim import SynAxis, SynGauss

    from sdl.testing import assert_instrument_conforms, check_instrument

    monkeypatch.setenv("SDL_PROFILE", str(PY_PROFILE))
    reg_mod.reset()
    assert_instrument_conforms("gauss-scan", points=2)
    assert_instrument_conforms("sim-xrd", points=1)

    motor = SynAxis(name="m")
    det = SynGauss("d", motor, "m", center=0, Imax=1, sigma=1)

    def forgets_md(*, md=None):  # opens its run without sdl's metadata
        yield from bp.count([det])

    bad = _instrument(plans={"p": forgets_md}, dofs={"x": motor})
    out = check_instrument(bad, points=1)
    assert out["runs"] == "ok" and "lacks 'reduction'" in out["start_document"] and "does the plan pass md" in \
        out["start_document"]
    assert out["refuses_bad_points"] == "ok"


def test_agents_and_reductions_from_a_profile(tmp_path, monkeypatch, store):
    from sdl.campaign import CampaignRunner, create_campaign
    from sdl.registry import agent_names

    prof = tmp_path / "extras.py"
    prof.write_text(textwrap.dedent('''
        import numpy as np

        def make(space, objectives, seed=0, **options):
            from sdl.agents import make_agent
            agent = make_agent("sobol", space, objectives, seed)
            agent.name = "my-sobol"
            return agent

        def peak(start, events, params):
            return {params["objective"]: float(np.max([np.max(e["data"][params["field"]]) for e in events]))}

        AGENTS = {"my-sobol": make}
        REDUCTIONS = {"peak": peak}
        '''))
    monkeypatch.setenv("SDL_PROFILE", os.pathsep.join([str(PY_PROFILE), str(prof)]))
    reg_mod.reset()
    assert "my-sobol" in agent_names() and "peak" in reg_mod.registry().reduction_names()
    with pytest.raises(InvalidInput, match=r"agent: unknown agent; allowed: \[.*'my-sobol'"):
        create_campaign(store, {"instrument": "gauss-scan", "agent": "nope"})
    cid = create_campaign(store, {"instrument": "gauss-scan", "agent": "my-sobol", "budget": 3})
    inst = reg_mod.registry().build("gauss-scan")
    inst.reduction = reduction_spec("peak", field="det", objective="intensity")  # the profile's reduction
    assert CampaignRunner(store, cid, instrument=inst).run() == "completed"
    obs = store.observations(cid)
    assert [o.extra.get("error") for o in obs] == [None] * 3
    assert store.documents(obs[0].run_uid)[0][1]["reduction"]["name"] == "peak"
    assert store.suggestions(cid)[0].provenance["agent"] == "my-sobol"


def test_a_family_of_instruments_by_name_pattern(tmp_path, monkeypatch):
    """``"gauss:*"`` registers every name it matches; the factory reads the name asked for."""
    prof = tmp_path / "family.py"
    prof.write_text(textwrap.dedent(f'''
        import importlib.util
        spec = importlib.util.spec_from_file_location("ophyd_sim_profile", {str(PY_PROFILE)!r})
        base = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(base)

        def family(ctx):
            centre = float(ctx.name.split(":", 1)[1])
            inst = base.gauss_scan(type(ctx)(seed=ctx.seed, options={{"center": centre}}))
            inst.name = ctx.name
            return inst

        INSTRUMENTS = {{"gauss:*": family}}
        '''))
    monkeypatch.setenv("SDL_PROFILE", str(prof))
    reg_mod.reset()
    r = reg_mod.registry()
    # beside sdl's own family "pool:*.csv" (any CSV table)
    assert "gauss:*" in r.patterns("instruments") and "gauss:*" not in r.names("instruments")
    from sdl.instruments import INSTRUMENTS, check_instrument_name, make_instrument

    assert check_instrument_name("gauss:2.5") == "gauss:2.5" and "gauss:2.5" in INSTRUMENTS
    inst = make_instrument("gauss:2.5")
    assert inst.name == "gauss:2.5" and inst.source == f"profile {prof}"
    with pytest.raises(InvalidInput, match=r"unknown instrument; allowed: \[.*\] or a name matching \['gauss:\*', 'pool:\*\.csv'\]"):
        check_instrument_name("gaus:1")
    out = CliRunner().invoke(__import__("sdl.cli").cli.app, ["instruments", "list", "--json", "--profile", str(prof)])
    assert '"gauss:*"' in out.output


def test_a_campaign_exposure_the_plan_does_not_allow_is_refused_before_anything_runs(store):
    from sdl.campaign import CampaignRunner, create_campaign

    def plan(x: float, *, exposure: Annotated[float, Arg(0, 1, units="s", open_lower=True)] = 0.1, md=None):
        yield from ()

    inst = _instrument(plans={"p": plan})
    cid = create_campaign(store, {"instrument": "sim-xrd", "budget": 2, "exposure": 2.0, "plan": "p"})
    with pytest.raises(InvalidInput, match=r"exposure: out of range: allowed \(0, 1\] s"):
        CampaignRunner(store, cid, instrument=inst)
    cid = create_campaign(store, {"instrument": "sim-xrd", "budget": 2, "plan": "nope"})
    with pytest.raises(InvalidInput, match=r"plan: unknown plan for t; allowed: \['p'\]"):
        CampaignRunner(store, cid, instrument=inst)


def test_an_unknown_instrument_names_the_profile_that_did_not_load(tmp_path, monkeypatch):
    broken = tmp_path / "typo.toml"
    broken.write_text("[instrument.ph]\ndescription = 1\n")
    monkeypatch.setenv("SDL_PROFILE", str(broken))
    reg_mod.reset()
    with pytest.raises(InvalidInput, match=r"unknown instrument; a profile that did not load may define it: "
                                           r".*typo.toml: "):
        reg_mod.registry().get("instruments", "ph")


def test_a_python_profile_that_builds_its_space_wrong_is_told_the_model_and_field(tmp_path, monkeypatch):
    prof = tmp_path / "badspace.py"
    prof.write_text(textwrap.dedent('''
        from sdl.space import RangeParameter

        def build(ctx):
            RangeParameter(name="x", lower=0, upper="ten")

        INSTRUMENTS = {"bad-space": build}
        '''))
    monkeypatch.setenv("SDL_PROFILE", str(prof))
    reg_mod.reset()
    with pytest.raises(PluginError) as err:
        reg_mod.registry().build("bad-space")
    msg = str(err.value)
    assert f"profile {prof} failed: RangeParameter.upper: Input should be a valid number" in msg, msg
    assert "(got 'ten')" in msg and "errors.pydantic.dev" not in msg

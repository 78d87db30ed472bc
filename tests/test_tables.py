"""CLI tables print ids and PV names whole at 80 columns, have --json, and commands
that take a campaign id accept a unique prefix (as git does)."""

from __future__ import annotations

import json

import pytest
from rich.console import Console
from typer.testing import CliRunner

from sdl.errors import InvalidInput
from sdl.tables import CAMPAIGN_COLUMNS, Col, print_rows, resolve_prefix

IDS = ["a04a85ff60814aea8a1f1b0c3d2e1f00", "a04a85ff99999999999999999999abcd", "b7c0ffee000000000000000000000001"]


def test_resolve_prefix_exact_unique_ambiguous_none():
    assert resolve_prefix("b7c0", IDS) == IDS[2]
    assert resolve_prefix("a04a85ff6", IDS) == IDS[0]
    assert resolve_prefix(IDS[1], IDS) == IDS[1]
    assert resolve_prefix("x", ["x", "xy"]) == "x"  # an exact id wins over a longer one it prefixes
    with pytest.raises(InvalidInput) as err:
        resolve_prefix("a04a85ff", IDS, field="campaign_id", what="campaign")
    assert err.value.field == "campaign_id"
    assert "ambiguous" in str(err.value) and IDS[0] in str(err.value) and IDS[1] in str(err.value)
    with pytest.raises(InvalidInput, match="no campaign id starts with"):
        resolve_prefix("zz", IDS, field="campaign_id", what="campaign")
    with pytest.raises(InvalidInput):
        resolve_prefix("", IDS)


def _render(rows, columns, width):
    console = Console(width=width, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    print_rows(console, columns, rows)
    return console.export_text()


def test_ids_whole_at_80_columns_and_narrower():
    rows = [{"id": i, "name": "a campaign with a rather long name that must wrap somewhere", "instrument": "pool:p3ht",
             "agent": "random", "status": "completed", "done": "50/50"} for i in IDS]
    for width in (80, 60, 30):
        text = _render(rows, CAMPAIGN_COLUMNS, width)
        for i in IDS:
            assert i in text, (width, text)
        if width == 80:  # a table that fits; narrower: one "key: value" line per field
            assert all(len(line) <= width for line in text.splitlines()), text
    pv = [{"name": "SDLB1234567x1:MONO:ENERGY.VELO", "ioc": "mono_energy", "type": "motor field", "access": "rw",
           "units": "", "doc": "velocity (EGU/s)"}, {"name": "SDL:RING:CURRENT", "ioc": "ring", "type": "double",
                                                      "access": "ro", "units": "mA", "doc": "ring current"}]
    text = _render(pv, [Col("name", "PV", True), Col("ioc", "IOC", True), Col("type"), Col("doc", "what")], 80)
    assert "SDLB1234567x1:MONO:ENERGY.VELO" in text and "SDL:RING:CURRENT" in text  # no emoji for :RING:


def test_json_rows(capsys):
    print_rows(Console(), CAMPAIGN_COLUMNS, [{"id": IDS[0], "status": "running"}], as_json=True)
    assert json.loads(capsys.readouterr().out) == [{"id": IDS[0], "status": "running"}]


@pytest.fixture
def store_url(tmp_path, monkeypatch):
    from sdl.store import Store

    url = f"sqlite:///{tmp_path / 'sdl.db'}"
    store = Store(url)
    for i in IDS:
        store.create_campaign(i, f"campaign {i[:4]}", {"instrument": "sim-xrd", "agent": "random", "budget": 6})
    store.close()
    monkeypatch.setenv("SDL_STORE_URL", url)
    monkeypatch.setenv("COLUMNS", "80")
    return url


def test_cli_campaign_list_and_prefixes(store_url):
    from sdl.cli import app

    runner = CliRunner()
    out = runner.invoke(app, ["campaign", "list", "--store", store_url])
    assert out.exit_code == 0, out.output
    for i in IDS:
        assert i in out.output
    assert all(len(line) <= 80 for line in out.output.splitlines())
    rows = json.loads(runner.invoke(app, ["campaign", "list", "--json", "--store", store_url]).output)
    assert [r["id"] for r in rows] == IDS and rows[0]["budget"] == 6
    shown = runner.invoke(app, ["campaign", "show", "b7c0", "--store", store_url])
    assert shown.exit_code == 0, shown.output
    assert IDS[2] in shown.output
    ambiguous = runner.invoke(app, ["campaign", "show", "a04a85ff", "--store", store_url])
    assert ambiguous.exit_code == 2
    assert "ambiguous" in ambiguous.output and IDS[0] in ambiguous.output and IDS[1] in ambiguous.output
    missing = runner.invoke(app, ["campaign", "resume", "zzzz", "--store", store_url])
    assert missing.exit_code == 2 and "no campaign id starts with" in missing.output


def test_cli_ioc_list_json_and_width(monkeypatch):
    from sdl.cli import app

    monkeypatch.setenv("COLUMNS", "80")
    runner = CliRunner()
    out = runner.invoke(app, ["ioc", "--list", "--prefix", "SDLB1234567x1:", "motors"])
    assert out.exit_code == 0, out.output
    assert "SDLB1234567x1:MONO:ENERGY.VELO" in out.output
    assert all(len(line) <= 80 for line in out.output.splitlines())
    rows = json.loads(runner.invoke(app, ["ioc", "--list", "--json", "ring"]).output)
    assert {r["name"] for r in rows} >= {"SDL:RING:CURRENT"}

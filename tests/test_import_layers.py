"""The package's modules import in layers: no import circle at module level, and the
three circles the first wave left (database<->store, epics_lab<->testing where
production code imported the test kit, dispatch<->relay) stay broken even counting
imports made inside functions."""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("sdl", "agents", "devices", "sim_devices")


def _modules() -> dict[str, Path]:
    mods = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            mods[name.removesuffix(".__init__")] = path
    return mods


def import_graph(module_level_only: bool) -> nx.DiGraph:
    """Edges module -> project module it imports (``from a.b import c`` counts as a.b.c or a.b)."""
    mods = _modules()

    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph = nx.DiGraph()
    graph.add_nodes_from(mods)
    for mod, path in mods.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        nodes = tree.body if module_level_only else ast.walk(tree)
        for node in nodes:
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            for name in names:
                target = resolve(name)
                # a package importing its own submodules is not a circle
                if target and target != mod and not mod.startswith(target + "."):
                    graph.add_edge(mod, target)
    return graph


def circles(graph: nx.DiGraph) -> list[set[str]]:
    return [c for c in nx.strongly_connected_components(graph) if len(c) > 1]


def test_graph_sees_imports():
    graph = import_graph(module_level_only=True)
    assert graph.has_edge("sdl.store", "sdl.database")
    assert graph.number_of_edges() > 100


def test_no_circle_at_module_level():
    assert circles(import_graph(module_level_only=True)) == []


@pytest.mark.parametrize(
    "a, b",
    [("sdl.database", "sdl.store"), ("sdl.epics_lab", "sdl.testing"),
     ("sdl.service.dispatch", "sdl.service.relay"),
     ("sdl.service.scheduler", "sdl.workflows.fairqueue")],  # the workflow queue builds on the scheduler
)
def test_old_circles_stay_broken(a, b):
    graph = import_graph(module_level_only=False)
    assert a in graph and b in graph
    both_ways = nx.has_path(graph, a, b) and nx.has_path(graph, b, a)
    assert not both_ways, f"{a} and {b} import each other (directly or through others)"


def test_production_code_does_not_import_the_test_kit():
    graph = import_graph(module_level_only=False)
    users = sorted(m for m in graph.predecessors("sdl.testing") if not m.startswith("sdl.testing"))
    assert users == []


def test_the_cli_package_puts_the_app_together_only_when_asked():
    """``sdl.cli.output`` is shared by command modules elsewhere (``sdl workflow``, ``sdl export``):
    loading it must not load every command group, or those modules would import themselves
    through ``sdl.cli``; ``from sdl.cli import app`` then gives the whole app."""
    import subprocess
    import sys

    code = ("import sys; import sdl.cli.output, sdl.workflows.cli; "
            "assert 'sdl.cli.root' not in sys.modules and 'sdl.cli.service' not in sys.modules; "
            "from sdl.cli import app, main; "
            "names = sorted(c.name or c.callback.__name__ for c in app.registered_commands) + "
            "sorted(g.name for g in app.registered_groups); print(' '.join(names))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["bench", "demo", "ioc", "serve", "submit", "worker",
                                  "campaign", "db", "export", "instruments", "workflow"], out.stdout

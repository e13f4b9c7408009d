"""The package's import graph: no circles (function-level imports count too), and no stage
imports the runner (a stage is usable alone with ``ds.map``)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"lomo_datasets": ROOT / "lomo_datasets", "lomo_datasets.processors": ROOT / "processors",
            "lomo_datasets.builders": ROOT / "builders"}
RUNNER = {"lomo_datasets.execution.pipeline", "lomo_datasets.execution.recipes", "lomo_datasets.cli"}


def import_graph() -> dict[str, set[str]]:
    # a package's __init__.py is the package (lomo_datasets.llm.backends)
    modules = {".".join([pkg, *(path.relative_to(folder).parent.parts if path.stem == "__init__" else path.relative_to(folder).with_suffix("").parts)]): path
               for pkg, folder in PACKAGES.items() for path in folder.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module:
                candidates = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                candidates = [a.name for a in node.names]
            else:
                continue
            targets |= {c for c in candidates if c in modules and c != name}
        graph[name] = targets
    return graph


def test_no_import_circles():
    graph = import_graph()
    assert "lomo_datasets.publish.card" in graph and "lomo_datasets.processors.asr" in graph
    state: dict[str, int] = {}
    circles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                circles.append(path[path.index(nxt):] + [nxt] if nxt in path else [node, nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for start in sorted(graph):
        if start not in state:
            visit(start, [start])
    assert circles == []


def test_stages_never_import_the_runner():
    graph = import_graph()
    stages = [m for m in graph if m.startswith("lomo_datasets.processors.")]
    assert len(stages) >= 10
    assert {m: sorted(graph[m] & RUNNER) for m in stages if graph[m] & RUNNER} == {}
    for core in ("lomo_datasets.core.stage", "lomo_datasets.llm.stage", "lomo_datasets.llm.backends", "lomo_datasets.publish.card"):
        assert not graph[core] & RUNNER, core


def test_every_subpackage_is_installed_by_setup_cfg():
    """`pip install .` (not editable) installs only the packages setup.cfg lists."""
    import configparser

    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    listed = set(config["options"]["packages"].split())
    folders = {".".join(["lomo_datasets", *p.parent.relative_to(ROOT / "lomo_datasets").parts])
               for p in (ROOT / "lomo_datasets").rglob("__init__.py")}
    assert folders - listed == set()

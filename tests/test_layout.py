"""The package's layers, checked from its source: no import circle (imports inside functions count too) and
no layer importing one above it. The order is README's "Layout" section:

contracts (errors, batch, output, store, textfiles, checkpoints, deprecated) < metrics < nn < media < data
< corpus < training < papers < experiments < a paper's report < cli
"""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

PACKAGE = REPO / "msa_lightning"
LAYERS = ("contracts", "metrics", "nn", "media", "data", "corpus", "training", "papers", "experiments", "report", "cli")


def module_name(path: Path) -> str:
    name = ".".join(path.relative_to(REPO).with_suffix("").parts)
    return name.removesuffix(".__init__")


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) < 2 or parts[1] not in LAYERS:
        return "contracts"  # msa_lightning itself and its top-level modules
    if parts[1] == "papers" and parts[-1] == "report":
        return "report"  # reads what experiments wrote
    return parts[1]


def imported_modules(path: Path) -> set[str]:
    """Every msa_lightning module ``path`` imports, at top level or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [
                f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in MODULES else node.module for a in node.names
            ]
        for name in names:
            while name and name not in MODULES:
                name = name.rpartition(".")[0]
            if name.startswith("msa_lightning"):
                found.add(name)
    return found


GRAPH = {m: imported_modules(p) - {m} for m, p in MODULES.items()}


def test_no_import_circles():
    """Tarjan's strongly connected components of the import graph: every one must be a single module."""
    index, low, stack, on_stack, circles = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for v in GRAPH:
        if v not in index:
            visit(v)
    assert not circles, circles


def test_no_layer_imports_one_above_it():
    upward = [
        f"{m} ({layer(m)}) imports {d} ({layer(d)})"
        for m, deps in GRAPH.items()
        for d in deps
        if LAYERS.index(layer(d)) > LAYERS.index(layer(m)) and m != "msa_lightning"
    ]
    assert not upward, "\n".join(sorted(upward))


def test_the_checks_see_an_upward_import_and_a_circle(tmp_path):
    """The walker finds imports inside functions (most of the package's lazy imports are there)."""
    source = tmp_path / "probe.py"
    source.write_text("def f():\n    from msa_lightning.cli.main import main\n    import msa_lightning.data.raw\n")
    assert imported_modules(source) == {"msa_lightning.cli.main", "msa_lightning.data.raw"}
    assert layer("msa_lightning.papers.fmlmsn.report") == "report" and layer("msa_lightning.store") == "contracts"


def test_every_paper_is_one_package_with_its_configs_and_tests():
    papers = sorted(p.name for p in (PACKAGE / "papers").iterdir() if p.is_dir() and p.name != "__pycache__")
    assert papers == ["baselines", "fmlmsn", "hybrid_shift", "skesl", "swrm", "twostep"]
    for paper in papers:
        assert (PACKAGE / "papers" / paper / "module.py").is_file(), paper
        assert (REPO / "configs" / paper).is_dir(), paper
        if paper != "baselines":  # the baselines are tested with the base classes (tests/training)
            assert (REPO / "tests" / paper).is_dir(), paper

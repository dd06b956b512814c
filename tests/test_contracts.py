"""The package's contracts, checked from its source: public names listed in ``__all__``, one home for each shared
name (modalities, splits, the shard format), every suite DataModule on the one base that declares its data facts."""

from __future__ import annotations

import ast
import importlib
import inspect
import re

import pytest
from conftest import REPO

PACKAGE = REPO / "msa_lightning"


def module_name(path) -> str:
    return ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")


SOURCES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
TREES = {name: ast.parse(path.read_text(encoding="utf-8")) for name, path in SOURCES.items()}


def declares_all(tree: ast.Module) -> bool:
    return any(
        isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets)
        for node in tree.body
    )


def top_level_assignments(tree: ast.Module) -> set[str]:
    names = set()
    for node in tree.body:
        targets = (
            node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        )
        names |= {t.id for t in targets if isinstance(t, ast.Name)}
    return names


@pytest.mark.parametrize("name", sorted(n for n, tree in TREES.items() if declares_all(tree)))
def test_every_name_in_all_exists(name):
    module = importlib.import_module(name)
    missing = [n for n in module.__all__ if not hasattr(module, n)]
    assert not missing, f"{name}.__all__ lists names it does not have: {missing}"
    assert len(set(module.__all__)) == len(module.__all__), f"{name}.__all__ lists a name twice"


@pytest.mark.parametrize("name", sorted(n for n, p in SOURCES.items() if p.name == "__init__.py"))
def test_every_public_class_and_function_of_a_package_is_in_all(name):
    """A package's public classes and functions (its own, or imported from its modules) are listed in ``__all__``."""
    package = importlib.import_module(name)
    public = {
        attr
        for attr, value in vars(package).items()
        if not attr.startswith("_")
        and (inspect.isclass(value) or inspect.isfunction(value))
        and value.__module__.startswith(name)
    }
    unlisted = public - set(getattr(package, "__all__", ()))
    assert not unlisted, f"{name} has public names missing from __all__: {sorted(unlisted)}"


@pytest.mark.parametrize(
    "shared, home",
    [("MODALITIES", "msa_lightning.batch"), ("SPLITS", "msa_lightning.data.specs")],
)
def test_each_shared_name_is_defined_once(shared, home):
    homes = [name for name, tree in TREES.items() if shared in top_level_assignments(tree)]
    assert homes == [home], f"{shared} is defined in {homes}; define it in {home} and derive local names from it"


SHARD_FORMAT = "msa_lightning.corpus.format"


def test_the_shard_format_has_one_owner():
    """Only corpus/format.py defines the shard format's names; nothing imports its private ones."""
    owned = top_level_assignments(TREES[SHARD_FORMAT]) | {
        n.name for n in TREES[SHARD_FORMAT].body if isinstance(n, ast.FunctionDef)
    }
    assert {"FORMAT", "MANIFEST", "SHARD_SPLITS", "VALID_SALT", "read_manifest"} <= owned
    problems = []
    for name, tree in TREES.items():
        if name == SHARD_FORMAT:
            continue
        defined = top_level_assignments(tree) | {
            n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))
        }
        problems += [f"{name} defines {n}" for n in sorted(defined & owned - {"__all__", "log"})]
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == SHARD_FORMAT:
                problems += [f"{name} imports {a.name}" for a in node.names if a.name.startswith("_")]
    assert not problems, problems


def test_no_issue_numbers_in_code_or_tests():
    pattern = re.compile(r"\bissues?\s*#?\d+|\(#\d+\)", re.IGNORECASE)
    found = [
        f"{path.relative_to(REPO)}:{i}"
        for folder in ("msa_lightning", "tests")
        for path in (REPO / folder).rglob("*.py")
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if pattern.search(line) and path.name != "test_contracts.py"
    ]
    assert not found, found


def test_every_suite_datamodule_declares_its_facts_on_the_one_base():
    from msa_lightning.data.base import SuiteDataModule
    from msa_lightning.papers.registry import DATAMODULES

    for cls in DATAMODULES:
        assert issubclass(cls, SuiteDataModule), cls
        assert cls.data_facts is not SuiteDataModule.data_facts, f"{cls.__name__} does not implement data_facts()"
        assert cls.describe is not SuiteDataModule.describe, f"{cls.__name__} does not implement describe()"

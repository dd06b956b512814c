"""Import paths of release 0.1, kept working for one release (removed in 0.3).

Release 0.2 gave each paper one package (``msa_lightning.papers.<name>``) and the shared layers their own
folders. Users' YAML files and scripts name the old modules (``class_path:
msa_lightning.models.swrm.SWRMModule``), so :class:`_OldPathFinder` answers every old module name with a
thin alias: importing it warns once (:class:`MSADeprecationWarning`, shown by default) and each name is
looked up in the module(s) that now hold it, so ``msa_lightning.models.swrm.SWRMModule is
msa_lightning.papers.swrm.module.SWRMModule``. Checkpoints that record an old class path load the same way.

Standard library only: ``import msa_lightning`` installs the finder.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings
from typing import Callable

REMOVED_IN = "0.3"


class MSADeprecationWarning(DeprecationWarning):
    """A name of msa_lightning that moved; the old one works until :data:`REMOVED_IN`."""


#: old module -> the modules that now hold its names (searched in order); () for a removed package
MOVED_MODULES: dict[str, tuple[str, ...]] = {
    "msa_lightning.models": (),
    "msa_lightning.tools": (),
    "msa_lightning.lightning_cli": ("msa_lightning.experiments.lightning_cli", "msa_lightning.experiments.process"),
    "msa_lightning.models.output": ("msa_lightning.output",),
    "msa_lightning.models.base": ("msa_lightning.training.module",),
    "msa_lightning.models.registry": ("msa_lightning.papers.registry",),
    "msa_lightning.models.baselines": ("msa_lightning.papers.baselines.module", "msa_lightning.papers.baselines.net"),
    "msa_lightning.models.swrm": ("msa_lightning.papers.swrm.module", "msa_lightning.papers.swrm.net"),
    "msa_lightning.models.hybrid_shift": ("msa_lightning.papers.hybrid_shift.module",),
    "msa_lightning.models.skesl": ("msa_lightning.papers.skesl.module", "msa_lightning.papers.skesl.net"),
    "msa_lightning.models.fmlmsn": ("msa_lightning.papers.fmlmsn.module", "msa_lightning.papers.fmlmsn.net"),
    "msa_lightning.models.twostep": ("msa_lightning.papers.twostep.module", "msa_lightning.papers.twostep.net"),
    "msa_lightning.nn.hybrid_shift": ("msa_lightning.papers.hybrid_shift.net",),
    "msa_lightning.papers.hybrid_shift.split_transformer": ("msa_lightning.nn.split_transformer",),
    "msa_lightning.data.sentiment_positions": ("msa_lightning.papers.swrm.positions",),
    "msa_lightning.data.mosi_asr": ("msa_lightning.papers.swrm.data",),
    "msa_lightning.data.asr": ("msa_lightning.data.transcripts",),
    "msa_lightning.data.skesl_masking": (
        "msa_lightning.papers.skesl.masking",
        "msa_lightning.papers.skesl.data",
        "msa_lightning.data.sampling",
    ),
    "msa_lightning.data.skesl_corpus": (
        "msa_lightning.corpus.sources",
        "msa_lightning.media.openface",
        "msa_lightning.media.acoustic",
        "msa_lightning.media.decode",
        "msa_lightning.media.synthetic",
        "msa_lightning.papers.skesl.data",
        "msa_lightning.errors",
    ),
    "msa_lightning.data.skesl_shards": ("msa_lightning.corpus.shards", "msa_lightning.corpus.format"),
    "msa_lightning.data.skesl_stream": (
        "msa_lightning.corpus.stream",
        "msa_lightning.corpus.format",
        "msa_lightning.papers.skesl.data",
    ),
    "msa_lightning.data.transcribe": ("msa_lightning.corpus.transcribe",),
    "msa_lightning.data.stage_features": ("msa_lightning.papers.fmlmsn.data",),
    "msa_lightning.data.raw_media": (
        "msa_lightning.data.raw",
        "msa_lightning.media.decode",
        "msa_lightning.media.synthetic",
        "msa_lightning.papers.twostep.data",
    ),
    "msa_lightning.tools.callbacks": ("msa_lightning.training.callbacks",),
    "msa_lightning.tools.predictions": ("msa_lightning.training.predictions",),
    "msa_lightning.tools.hybrid_shift_plots": ("msa_lightning.papers.hybrid_shift.plots",),
    "msa_lightning.tools.runs": ("msa_lightning.experiments.seeds",),
    "msa_lightning.tools.pipeline": ("msa_lightning.experiments.pipeline",),
    "msa_lightning.tools.export": ("msa_lightning.experiments.export",),
    "msa_lightning.tools.results": ("msa_lightning.experiments.results", "msa_lightning.papers.fmlmsn.report"),
    "msa_lightning.tools.commands": ("msa_lightning.cli.commands", "msa_lightning.data.file_report"),
    "msa_lightning.tools.parsing": ("msa_lightning.cli.parsing",),
}


def warn_moved(old: str, new: str, stacklevel: int = 3) -> None:
    warnings.warn(
        f"{old} moved to {new} in msa_lightning 0.2; the old name works until {REMOVED_IN}",
        MSADeprecationWarning,
        stacklevel=stacklevel,
    )


def _lookup(old: str, targets: tuple[str, ...], name: str):
    for target in targets:
        try:
            module = importlib.import_module(target)
        except ModuleNotFoundError as error:
            if error.name != target:  # a dependency of the target is missing: say so, not "no attribute"
                raise
            continue
        if hasattr(module, name):
            return getattr(module, name)
    raise AttributeError(f"module {old!r} has no attribute {name!r} (it moved: see msa_lightning.deprecated)")


def moved_names(module: str, homes: dict[str, str]) -> Callable[[str], object]:
    """A module ``__getattr__`` for names that moved out of ``module``: each warns once and is found in its home."""

    def __getattr__(name: str):
        home = homes.get(name)
        if home is None:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        warn_moved(f"{module}.{name}", f"{home}.{name}")
        return getattr(importlib.import_module(home), name)

    return __getattr__


class _OldPathFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path=None, target=None):
        if fullname not in MOVED_MODULES:
            return None
        return importlib.machinery.ModuleSpec(fullname, self, is_package=not MOVED_MODULES[fullname])

    def create_module(self, spec):
        return None

    def exec_module(self, module) -> None:
        old, targets = module.__name__, MOVED_MODULES[module.__name__]
        if not targets:  # a removed package: its submodules are aliases too
            module.__path__ = []
            return
        warn_moved(old, " / ".join(targets), stacklevel=2)
        module.__getattr__ = lambda name: _lookup(old, targets, name)
        module.__all__ = []


def install() -> None:
    if not any(isinstance(f, _OldPathFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _OldPathFinder())
    # shown by default (Python hides DeprecationWarning outside __main__), once per place
    warnings.filterwarnings("default", category=MSADeprecationWarning)

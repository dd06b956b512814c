"""Checkpoints as the ``msa`` command takes them: run folders resolved to a file, the file validated,
and the model class it was saved from.

* :func:`resolve_checkpoint` turns ``--ckpt_path`` (a file, a run folder, ``RUN/best``, ``RUN/last``)
  into a checkpoint file;
* :func:`read_checkpoint` opens it (memory-mapped, tensors only) and turns a truncated or foreign file
  into one :class:`~msa_lightning.errors.ConfigError` naming it;
* :func:`checkpoint_class` is the model class the checkpoint records: the ``_class_path`` that
  LightningCLI stores in the hyper-parameters (``hyper_parameters["_class_path"]``), else the
  ``model.class_path`` of the run's saved ``config.yaml``;
* :func:`check_checkpoint_class` compares it with the class a config asks for.

Nothing here imports Lightning (torch only when a checkpoint is read).
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

from msa_lightning.errors import ConfigError

#: ``--ckpt_path`` values Lightning resolves itself
LIGHTNING_NAMES = ("best", "last", "hpc", "registry")


# ---------------------------------------------------------------------------------------------- run folders
def resolve_checkpoint(path: str | os.PathLike, which: str = "best") -> str:
    """A checkpoint file for ``--ckpt_path``: a file as it is; a run folder -> its best checkpoint
    (``which="best"``) or ``last.ckpt``; ``RUN/best`` and ``RUN/last`` choose explicitly."""
    path = Path(path).expanduser()
    if path.is_file():
        return str(path)
    if path.name in ("best", "last") and path.parent.is_dir():
        path, which = path.parent, path.name
    if not path.is_dir():
        if str(path) in LIGHTNING_NAMES or str(path).startswith("registry:"):
            return str(path)  # Lightning's own names
        where = path.parent if path.parent.is_dir() else None
        raise ConfigError(
            f"ckpt_path={str(path)!r}: no such file or run folder"
            + (f" ({where} {_listing(where)[3:]})" if where else "")
        )
    folder = _checkpoint_folder(path)
    if which == "last":
        last = folder / "last.ckpt"
        if last.is_file():
            return str(last)
        raise ConfigError(f"ckpt_path={str(path)!r}: no last.ckpt in {folder} ({_listing(folder)})")
    best = _best_checkpoint(folder)
    if best is None:
        raise ConfigError(
            f"ckpt_path={str(path)!r}: no best checkpoint (best*.ckpt) in {folder} ({_listing(folder)}); "
            f"pass a file or {path}/last"
        )
    return str(best)


def _listing(folder: Path, limit: int = 12) -> str:
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())
    if not names:
        return "the folder is empty"
    return "it holds: " + ", ".join(names[:limit]) + (f", ... ({len(names)} entries)" if len(names) > limit else "")


def _checkpoint_folder(run: Path) -> Path:
    """``run`` itself, ``run/checkpoints``, or the single ``*/checkpoints`` below it (a logger's version folder)."""
    if any(run.glob("*.ckpt")):
        return run
    if (run / "checkpoints").is_dir():
        return run / "checkpoints"
    found = sorted({p.parent for p in run.glob("**/checkpoints/*.ckpt")})
    if len(found) == 1:
        return found[0]
    if len(found) > 1:
        raise ConfigError(
            f"ckpt_path={str(run)!r} holds several runs with checkpoints: "
            + ", ".join(str(p.parent) for p in found)
            + "; pass one of them"
        )
    raise ConfigError(f"ckpt_path={str(run)!r}: no checkpoints found ({_listing(run)})")


def _best_checkpoint(folder: Path) -> Path | None:
    """The best checkpoint the run's ModelCheckpoint recorded (read from ``last.ckpt``), else the only
    ``best*.ckpt``, else the newest one."""
    candidates = sorted(folder.glob("best*.ckpt"))
    if len(candidates) <= 1:
        return candidates[0] if candidates else None
    last = folder / "last.ckpt"
    if last.is_file():
        state = read_checkpoint(last)
        for key, value in state.get("callbacks", {}).items():
            if str(key).startswith("ModelCheckpoint") and isinstance(value, dict) and value.get("best_model_path"):
                recorded = folder / Path(value["best_model_path"]).name
                if recorded.is_file():
                    return recorded
    return max(candidates, key=lambda p: p.stat().st_mtime_ns)


def run_config(checkpoint: str | os.PathLike) -> Path | None:
    """The ``config.yaml`` LightningCLI saved for the run a checkpoint belongs to (``RUN/checkpoints/x.ckpt``
    -> ``RUN/config.yaml``)."""
    checkpoint = Path(checkpoint)
    for folder in (checkpoint.parent, checkpoint.parent.parent):
        if (folder / "config.yaml").is_file():
            return folder / "config.yaml"
    # checkpoints moved out of the logger's folder (`--checkpoint.dirpath`, pipeline stages): RUN/*/version_*/
    found = sorted(checkpoint.parent.parent.glob("*/*/config.yaml"))
    return found[0] if len(found) == 1 else None


# ---------------------------------------------------------------------------------------------- the file
def read_checkpoint(path: str | os.PathLike) -> dict:
    """The checkpoint's contents, memory-mapped (tensors are not read) and with torch's tensors-only
    unpickler. A missing, truncated or foreign file is a ConfigError naming it."""
    import pickle

    import torch

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"ckpt_path={str(path)!r}: no such checkpoint file")
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive; a cut-off one has no central directory
        raise ConfigError(
            f"ckpt_path={str(path)!r}: not a readable checkpoint ({path.stat().st_size:,} bytes, "
            f"not a complete PyTorch archive: truncated by an interrupted copy or save, or another kind "
            f"of file)"
        )
    try:
        state = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except pickle.UnpicklingError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(
            f"ckpt_path={str(path)!r}: the checkpoint holds objects the tensors-only loader refuses ({first})"
        ) from None
    except Exception as err:  # noqa: BLE001 - a damaged archive fails in many ways
        detail = " ".join(str(err).split())[:300] or type(err).__name__
        raise ConfigError(
            f"ckpt_path={str(path)!r}: not a readable checkpoint ({type(err).__name__}: {detail})"
        ) from None
    if not isinstance(state, dict):
        raise ConfigError(f"ckpt_path={str(path)!r}: not a Lightning checkpoint (it holds a {type(state).__name__})")
    return state


def checkpoint_class(path: str | os.PathLike, state: dict | None = None) -> str | None:
    """The import path of the model class ``path`` was saved from: LightningCLI's ``_class_path`` in the
    hyper-parameters, else ``model.class_path`` of the ``config.yaml`` saved next to it (``RUN/`` of
    ``RUN/checkpoints/x.ckpt``); None if neither says."""
    state = read_checkpoint(path) if state is None else state
    hparams = state.get("hyper_parameters") or {}
    if isinstance(hparams, dict) and isinstance(hparams.get("_class_path"), str):
        return hparams["_class_path"]
    path = Path(path)
    saved = next((f / "config.yaml" for f in (path.parent, path.parent.parent) if (f / "config.yaml").is_file()), None)
    if saved is not None:
        import yaml

        try:
            model = (yaml.safe_load(saved.read_text()) or {}).get("model")
        except (OSError, yaml.YAMLError):
            return None
        if isinstance(model, dict) and isinstance(model.get("class_path"), str):
            return model["class_path"]
        if isinstance(model, str):
            return model
    return None


def short_name(class_path: str) -> str:
    return str(class_path).rsplit(".", 1)[-1]


def same_class(a: str, b: str) -> bool:
    """Two class paths name the same class (a full import path and its short name, or a class reached
    through a package that re-exports it)."""
    return a == b or short_name(a) == short_name(b)


def check_checkpoint_class(
    path: str | os.PathLike,
    model_class: str,
    state: dict | None = None,
    what: str = "the config's model",
    switch: str = "--model={}",
) -> str | None:
    """ConfigError naming both classes when the checkpoint was saved from another model class than
    ``model_class``; returns the checkpoint's class (None when it does not record one). ``switch`` is how
    the message says to choose the checkpoint's class instead."""
    found = checkpoint_class(path, state)
    if found is not None and not same_class(found, model_class):
        raise ConfigError(
            f"ckpt_path={str(path)!r} is a checkpoint of {short_name(found)}, but {what} is "
            f"{short_name(model_class)}: pass a checkpoint of {short_name(model_class)}, or "
            f"{switch.format(short_name(found))} (or leave the model out to use the checkpoint's class)"
        )
    return found


#: the checkpoint ``ExactResume`` writes on Ctrl-C (beside ``last.ckpt``)
INTERRUPTED_NAME = "interrupted.ckpt"


def newest_resume_checkpoint(folder: str | os.PathLike) -> Path | None:
    """Where an unfinished fit that wrote its checkpoints into ``folder`` continues: the newer of
    ``interrupted.ckpt`` (Ctrl-C mid-epoch) and ``last.ckpt`` (the latest epoch end); None if it wrote neither."""
    found = [p for p in (Path(folder) / INTERRUPTED_NAME, Path(folder) / "last.ckpt") if p.is_file()]
    return max(found, key=lambda p: p.stat().st_mtime_ns) if found else None


#: environment variable naming the file ``MetricsHistory`` appends to (``msa sweep`` sets it for each trial)
METRICS_HISTORY_ENV = "MSA_METRICS_HISTORY"


def read_metrics_history(path: str | os.PathLike) -> list[dict[str, float]]:
    """The rows (``{"epoch", "step", <metric>: value}``) of a ``MetricsHistory`` file, one per epoch (the last
    written for an epoch wins: a resumed run repeats none); a partly written last line (the run was killed while
    writing) is ignored."""
    import json

    rows: dict[int, dict] = {}
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and isinstance(row.get("epoch"), int):
            rows[row["epoch"]] = row
    return [rows[e] for e in sorted(rows)]

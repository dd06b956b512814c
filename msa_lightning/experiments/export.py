"""``msa export``: write model outputs per split into the store, from a checkpoint and its config.

    msa export runs/msa/version_3 --outputs features.M M --splits train valid test
    msa export path/to/best-07.ckpt --config my.yaml --outputs features.H
    msa export copied/run --outputs M -- --data.init_args.path=/data/MOSI   # the saved config, data moved

Outputs are names of ``MSAOutput.flat()`` (``M``, ``T``, ``features.<name>``, ``extras.<name>``). The
entry (store kind ``"export"``) is keyed by the checkpoint's *content hash*, the data settings that
shape the rows (data class, the feature file's content hash, every DataModule argument but loader
ones such as batch size or workers), the outputs and the splits: a retrained checkpoint or other data
give a new entry, never stale arrays; the same inputs reuse the entry. Arrays are named
``"{split}/{output}"``; ``meta["ids"][split]`` lists the utterance ids in row order and
``meta["checkpoint"]`` the checkpoint file. A DataModule may offer splits beyond train/valid/test
(``extra_splits``: a K-fold stacking run's ``heldout``); its ``fold_spec`` goes into ``meta["fold"]``.

The model and data are built through the ``msa`` CLI from the run's saved ``config.yaml`` (next to
its ``checkpoints/`` folder, wherever the run folder is now) or from ``--config`` files; overrides
after ``--`` apply to either, so every setting a fit accepts applies here too. The checkpoint must be
one of the config's model class (a config without a model takes the checkpoint's).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from msa_lightning.checkpoints import (
    check_checkpoint_class,
    checkpoint_class,
    read_checkpoint,
    resolve_checkpoint,
    run_config,
    short_name,
)
from msa_lightning.data.datamodule import check_inputs
from msa_lightning.data.folds import HELDOUT
from msa_lightning.data.specs import SPLITS
from msa_lightning.errors import ConfigError
from msa_lightning.store import Entry, Store
from msa_lightning.training.module import MSARegressionModule

log = logging.getLogger(__name__)

#: DataModule arguments that change how rows are batched or loaded, not what they hold
LOADER_ONLY = {
    "batch_size",
    "eval_batch_size",
    "num_workers",
    "pin_memory",
    "persistent_workers",
    "cache_dir",
    "predict_split",
    "shuffle_seed",
    "prefetch_factor",
}


def data_settings(data_config: Mapping[str, Any], store: Store, datamodule=None) -> dict:
    """The data part of an export key: class and arguments, files replaced by their content hashes
    (the feature file the DataModule actually reads included, when ``path`` names a folder)."""
    init_args = dict(data_config.get("init_args") or {})
    settings: dict[str, Any] = {"class": str(data_config.get("class_path", "")).rsplit(".", 1)[-1]}
    for name, value in sorted(init_args.items()):
        if name in LOADER_ONLY:
            continue
        if isinstance(value, str) and value and Path(value).is_file():
            value = {"file_sha256": store.content_hash(value)}
        elif isinstance(value, str) and value and Path(value).is_dir():
            value = {"folder": str(Path(value).resolve())}
        settings[name] = value
    feature_file = getattr(datamodule, "feature_file", None)
    if feature_file is not None and Path(feature_file).is_file():
        settings["feature_file_sha256"] = store.content_hash(feature_file)
    return settings


def export_outputs(
    model: torch.nn.Module,
    datamodule,
    checkpoint: str | Path,
    outputs: Sequence[str],
    splits: Sequence[str] = SPLITS,
    store: Store | None = None,
    data_key: Mapping | None = None,
) -> tuple[Entry, bool]:
    """Run ``type(model)`` loaded from ``checkpoint`` (eval mode) over ``splits`` of ``datamodule``; store
    the named ``MSAOutput.flat()`` outputs. Returns ``(entry, built)``; ``built`` is False when an entry
    for the same checkpoint content, data, outputs and splits already existed."""
    store = store or Store()
    checkpoint = Path(checkpoint)
    known = [*SPLITS, *getattr(datamodule, "extra_splits", ())]  # a fold run's `heldout`
    unknown = [s for s in splits if s not in known]
    if unknown == [HELDOUT]:
        raise ConfigError(
            f"export splits: {HELDOUT!r} is the held-out fold of a K-fold stacking run, and this run's data has "
            "no fold (data.init_args.fold is not set)"
        )
    if unknown:
        raise ConfigError(f"export splits: expected names among {known}, found {unknown}")
    inputs = {
        "checkpoint": store.content_hash(checkpoint),
        "data": dict(data_key or {}),
        "outputs": list(outputs),
        "splits": list(splits),
    }
    entry = store.get("export", inputs)
    if entry is not None:
        return entry, False

    # the checkpoint's own hyper-parameters (data-shaped ones filled when it was trained) and weights
    check_checkpoint_class(
        checkpoint,
        f"{type(model).__module__}.{type(model).__qualname__}",
        read_checkpoint(checkpoint),
        what="the model of the export's config",
        switch="`-- --model={}`",
    )
    try:
        model = type(model).load_from_checkpoint(checkpoint, map_location="cpu", weights_only=False)
    except RuntimeError as error:
        detail = " ".join(str(error).split())[:400]
        raise ConfigError(f"checkpoint {checkpoint} does not fit {type(model).__name__}: {detail}") from None
    if isinstance(model, MSARegressionModule):
        model.apply_data_facts(datamodule)  # a model trained on other data is an error naming both
    model.eval()
    check_inputs(model, datamodule)
    if getattr(datamodule, "inputs", None) is None and hasattr(model, "required_inputs"):
        datamodule.inputs = set(model.required_inputs)
    if getattr(datamodule, "trim_text", False):
        datamodule.trim_text = False  # per-token outputs of every batch must share the width to be stacked
    datamodule.prepare_data()
    datamodule.setup("predict")
    arrays: dict[str, np.ndarray] = {}
    ids: dict[str, list[str]] = {}
    with torch.inference_mode():
        for split in splits:
            datamodule.predict_split = split
            parts: dict[str, list[np.ndarray]] = {name: [] for name in outputs}
            ids[split] = []
            for batch in datamodule.predict_dataloader():
                flat = model(batch.to(model.device)).flat()
                missing = [name for name in outputs if name not in flat]
                if missing:
                    raise ConfigError(
                        f"export: {type(model).__name__} has no output {missing[0]!r}; "
                        f"its outputs: {', '.join(sorted(flat))}"
                    )
                for name in outputs:
                    parts[name].append(flat[name].detach().float().cpu().numpy())
                ids[split].extend(str(i) for i in batch.ids)
            for name, chunks in parts.items():
                arrays[f"{split}/{name}"] = np.concatenate(chunks) if chunks else np.zeros((0,), np.float32)
    meta = {"ids": ids, "checkpoint": str(checkpoint.resolve()), "model": type(model).__name__}
    if getattr(datamodule, "fold_spec", None) is not None:  # a fold run of K-fold stacking: which clips it held out
        meta["fold"] = dict(datamodule.fold_spec)
    feature_file = getattr(datamodule, "feature_file", None)
    if feature_file is not None and Path(feature_file).is_file():  # what a later stage checks its own file against
        meta["feature_file"] = str(Path(feature_file).resolve())
        meta["feature_file_sha256"] = store.content_hash(feature_file)
    return store.put("export", inputs, arrays, meta), True


def export_command(
    checkpoint: str,
    cli_args: Sequence[str] | None = None,
    outputs: Sequence[str] = ("M",),
    splits: Sequence[str] = SPLITS,
    store_root: str | None = None,
    overrides: Sequence[str] = (),
) -> Entry:
    """Resolve the checkpoint (a file, or a run folder -> its best checkpoint), build model and data
    through the CLI, export, and say where the arrays are.

    Model and data come from ``cli_args`` (config files and overrides as for ``msa fit``: the whole
    command line) or, without them, from the run's saved ``config.yaml`` (found next to the checkpoint,
    wherever the run folder now is); ``overrides`` (``--data.init_args.path=...``) apply on top of either. A config
    without a
    model takes the checkpoint's class (one note says so); another model class is an error naming both."""
    from msa_lightning.experiments.lightning_cli import make_cli, model_given

    ckpt = Path(resolve_checkpoint(checkpoint, "best"))
    if not ckpt.is_file():
        raise ConfigError(f"export: checkpoint {checkpoint!r} not found")
    state = read_checkpoint(ckpt)  # a truncated or foreign file: one error naming it
    cli_args = list(cli_args or [])
    if not cli_args:
        saved = run_config(ckpt)
        if saved is None:
            raise ConfigError(f"export: no config.yaml next to {ckpt} (nor in its run folder); pass --config")
        import yaml

        config = yaml.safe_load(saved.read_text()) or {}
        for key in ("ckpt_path", "weights_only"):  # `fit` arguments; model and data are built without subcommand
            config.pop(key, None)
        cli_args = ["--config", yaml.safe_dump(config), *cli_args]
    cli_args += list(overrides)
    if not model_given(cli_args):
        found = checkpoint_class(ckpt, state)
        if found is None:
            raise ConfigError(
                f"export: the config gives no model and {ckpt} does not record its class; "
                f"pass --config with a model section"
            )
        log.warning(
            "msa: note: no model in the config; using the checkpoint's class %s (--model=%s)", short_name(found), found
        )
        cli_args.append(f"--model={found}")
    # model and data only (the trainer is built but never run; no logger folder)
    cli = make_cli([*cli_args, "--trainer.logger=false"], run=False)
    data_config = cli.config.get("data")
    data_config = data_config.as_dict() if hasattr(data_config, "as_dict") else dict(data_config)
    store = Store(store_root if store_root else getattr(cli.datamodule, "cache_dir", None))
    entry, built = export_outputs(
        cli.model, cli.datamodule, ckpt, outputs, splits, store, data_settings(data_config, store, cli.datamodule)
    )
    rows = ", ".join(f"{s} {len(entry.meta['ids'][s])}" for s in splits)
    log.info(
        "msa: %s: %s of %s (%s rows) -> %s",
        "exported" if built else "export up to date",
        ", ".join(outputs),
        ckpt,
        rows,
        entry.path,
    )
    return entry

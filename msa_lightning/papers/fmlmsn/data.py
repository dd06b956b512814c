"""FmlMSN's derived inputs: BERT token features computed once, and saved stage features.

**Text features** (Section 4.1.1). FmlMSN reads BERT token features ``[N, L, H]``: the feature file's
``text`` array when it has one (the CH-SIMS files do); otherwise
:class:`TextFeaturesDataModule` runs a frozen BERT (``text_model``) over the file's token ids once
per split and keeps the result in the store (kind ``"frozen_features"``, keyed by the encoder's
name, a fingerprint of its weights and the token ids), so later runs read it memory-mapped.

**Stage features** (Section 4.3, Algorithm 1).

An earlier stage's outputs are exported per split into the store (kind ``"export"``: arrays
``"{split}/{output}"``, ``meta["ids"][split]`` the utterance ids in row order, ``meta["checkpoint"]``);
the store key holds the checkpoint's content hash, so a retrained stage gets a new entry and can
never feed stale features. :class:`StageFeaturesDataModule` reads several such exports, aligns
their rows to the feature file's utterance ids (checking that every export covers exactly the
file's samples of each split) and yields them in ``batch.extras["H_<stage>"]``, with the labels of
the feature file. ``msa export`` (:mod:`msa_lightning.experiments.export`) and the ``export`` section of a
``msa pipeline`` stage write such exports. With K-fold stacking (``fold_exports``) the training rows come out of
fold instead: each from the export of the fold run that held the clip out (:func:`out_of_fold_rows`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from msa_lightning.data.base import DataFacts
from msa_lightning.data.datamodule import MSADataModule
from msa_lightning.data.folds import HELDOUT, fold_assignment, split_off_fold
from msa_lightning.data.reader import SplitArrays
from msa_lightning.errors import ConfigError, DataError
from msa_lightning.store import Entry, Store

log = logging.getLogger(__name__)


def open_export(folder: str | Path, what: str = "export") -> Entry:
    """The store entry of an export folder, or one DataError naming the folder."""
    folder = Path(folder).expanduser()
    try:
        entry = Entry(folder)
    except (OSError, ValueError) as err:
        raise DataError(
            f"{what}: {folder} is not a complete store entry ({type(err).__name__}: no readable "
            "meta.json); run the stage's export first"
        ) from None
    if entry.meta.get("kind") != "export" or not isinstance(entry.meta.get("ids"), dict):
        raise DataError(
            f"{what}: {folder} is a store entry of kind {entry.meta.get('kind')!r} without "
            "per-split ids; expected an export (kind 'export', meta 'ids')"
        )
    return entry


def aligned_rows(entry: Entry, split: str, output: str, ids: Sequence[str], what: str) -> np.ndarray:
    """The export's ``{split}/{output}`` rows reordered to ``ids``; every id must appear exactly once."""
    name = f"{split}/{output}"
    if name not in entry:
        raise DataError(f"{what}: {entry.path} has no array {name!r} (it has {entry.names})")
    export_ids = [str(i) for i in entry.meta["ids"].get(split, [])]
    position = {i: row for row, i in enumerate(export_ids)}
    if len(position) != len(export_ids):
        raise DataError(f"{what}: {entry.path}, split {split!r}: duplicate utterance ids in the export")
    missing = [i for i in ids if i not in position]
    if missing or len(export_ids) != len(ids):
        detail = f"first missing id {missing[0]!r}" if missing else "it has ids the feature file lacks"
        raise DataError(
            f"{what}: {entry.path}, split {split!r}: expected the {len(ids)} utterances of the "
            f"feature file, found {len(export_ids)} in the export ({len(missing)} missing, {detail}); "
            "was it exported from another feature file?"
        )
    rows = np.fromiter((position[i] for i in ids), dtype=np.int64, count=len(ids))
    values = np.asarray(entry[name])[rows]
    if values.ndim != 2 or len(values) != len(ids):
        raise DataError(f"{what}: {entry.path}: {name!r} has shape {values.shape}, expected [N, D]")
    return np.ascontiguousarray(values, dtype=np.float32)


def out_of_fold_rows(entries: list[Entry], output: str, ids: Sequence[str], stage: str) -> np.ndarray:
    """The training rows of one stage assembled from its K fold exports (:class:`StageFeaturesDataModule`'s
    ``fold_exports``): each id's row from the fold export that held it out, in the order of ``ids``.

    The exports must be folds ``0..K-1`` of one assignment (same K and seed) whose held-out ids are exactly
    the training ids that :func:`~msa_lightning.data.folds.fold_assignment` puts in each fold; a gap, an
    overlap or a stranger is one DataError naming the stage, the fold and an example id."""
    specs = []
    for k, entry in enumerate(entries):
        spec = entry.meta.get("fold")
        if not isinstance(spec, dict) or HELDOUT not in entry.meta["ids"]:
            raise DataError(
                f"data.init_args.fold_exports ({stage}), fold {k}: {entry.path} is not the export of a fold run "
                f"(no split {HELDOUT!r}); give the exports of the stage's fold runs (`stacking: kfold`)"
            )
        specs.append(spec)
    folds, seed = specs[0]["folds"], specs[0]["seed"]
    if sorted(s["index"] for s in specs) != list(range(len(entries))) or any(
        (s["folds"], s["seed"]) != (folds, seed) for s in specs
    ):
        found = ", ".join(f"fold {s['index']} of {s['folds']} (seed {s['seed']})" for s in specs)
        raise DataError(
            f"data.init_args.fold_exports ({stage}): expected folds 0..{len(entries) - 1} of one assignment, "
            f"found {found}"
        )
    expected = fold_assignment(ids, folds, seed)
    held: dict[str, tuple[int, Entry]] = {}
    for spec, entry in sorted(zip(specs, entries), key=lambda pair: pair[0]["index"]):
        k = spec["index"]
        for i in (str(i) for i in entry.meta["ids"][HELDOUT]):
            if i in held:
                raise DataError(
                    f"data.init_args.fold_exports ({stage}): training id {i!r} is held out by fold {held[i][0]} "
                    f"and by fold {k} ({entry.path}); every training clip belongs to one fold"
                )
            held[i] = (k, entry)
    position = {i: n for n, i in enumerate(ids)}
    for i, (k, entry) in held.items():
        if i not in position:
            raise DataError(
                f"data.init_args.fold_exports ({stage}), fold {k}: {entry.path} holds id {i!r}, which is not a "
                "training clip of the feature file; was it exported from another feature file?"
            )
        if expected[position[i]] != k:
            raise DataError(
                f"data.init_args.fold_exports ({stage}), fold {k}: id {i!r} belongs to fold "
                f"{expected[position[i]]} of the assignment ({folds} folds, seed {seed}); the fold runs did not "
                "split this feature file's training clips"
            )
    missing = [n for n, i in enumerate(ids) if i not in held]
    if missing:
        first = missing[0]
        raise DataError(
            f"data.init_args.fold_exports ({stage}), fold {expected[first]}: training id {ids[first]!r} is in no "
            f"fold export ({len(missing)} of {len(ids)} training clips missing); run the stage's fold runs again"
        )
    parts = []
    for spec, entry in zip(specs, entries):
        mine = np.flatnonzero(expected == spec["index"])
        where = f"data.init_args.fold_exports ({stage}), fold {spec['index']}"
        parts.append((mine, aligned_rows(entry, HELDOUT, output, [ids[n] for n in mine], where)))
    widths = sorted({rows.shape[1] for _, rows in parts})
    if len(widths) != 1:
        raise DataError(f"data.init_args.fold_exports ({stage}): the folds' {output!r} have different widths {widths}")
    values = np.empty((len(ids), widths[0]), np.float32)
    for mine, rows in parts:
        values[mine] = rows
    return values


class StageFeaturesDataModule(MSADataModule):
    """Labels from a feature file plus saved stage features (for
    :class:`~msa_lightning.papers.fmlmsn.module.FmlMSNMeta`).

    Args:
        path, dataset, batch_size, ...: as :class:`MSADataModule` (the file gives ids and labels).
        exports: export folders (store entries), one per stage, e.g. the pipeline's
            ``${stage_av.export}``.
        stages: the name of each export's stage, in the same order; its features arrive as
            ``batch.extras["H_<name>"]``.
        output: the exported output to read (``features.H``: H_gamma of each stage).
        fold_exports: K-fold stacking (``msa pipeline`` with ``stacking: kfold`` fills it from
            ``${<stage>.fold_exports}``): per stage, the exports of its K fold runs, each holding H of the training
            clips its model never saw (split ``heldout``). The training features are then assembled out of fold:
            each training clip's row from the fold model that held it out; the K folds must cover every training
            clip exactly once. Validation and test features still come from ``exports`` (the stage trained on
            the whole training split, whose best checkpoint is also what Eq. 8 judges), as usual in stacking.
            Empty, or an empty list per stage (the default): the training features of ``exports``, the paper's
            in-sample stacking (Algorithm 1).
    """

    def __init__(
        self,
        path: str,
        exports: list[str],
        stages: list[str] = ["AV", "AT", "VT"],
        output: str = "features.H",
        dataset: str = "sims",
        fold_exports: list[list[str]] = [],
        **kwargs,
    ) -> None:
        super().__init__(path, dataset=dataset, **kwargs)
        if len(exports) != len(stages):
            raise ConfigError(
                f"data.init_args.exports has {len(exports)} folders but data.init_args.stages names "
                f"{len(stages)} stages ({stages}); give one export per stage"
            )
        if any(fold_exports) and len(fold_exports) != len(stages):
            raise ConfigError(
                f"data.init_args.fold_exports has {len(fold_exports)} lists but data.init_args.stages names "
                f"{len(stages)} stages ({stages}); give the fold exports of every stage, or none (in-sample)"
            )
        for i, (folders, name) in enumerate(zip(fold_exports, stages)):
            if any(fold_exports) and len(folders) < 2:
                raise ConfigError(
                    f"data.init_args.fold_exports[{i}] ({name}) has {len(folders)} fold exports; K-fold stacking "
                    "needs K >= 2 per stage"
                )
        self.exports, self.stage_names, self.output = [str(e) for e in exports], list(stages), output
        self.fold_exports = [[str(f) for f in folders] for folders in fold_exports] if any(fold_exports) else []
        self.feature_widths: dict[str, int] | None = None
        self._entries: list[Entry] | None = None
        self._fold_entries: list[list[Entry]] | None = None

    @property
    def stacking(self) -> str:
        """``kfold`` with fold exports (out-of-fold training features), else ``in_sample`` (Algorithm 1)."""
        return "kfold" if self.fold_exports else "in_sample"

    def entries(self) -> list[Entry]:
        if self._entries is None:
            self._entries = [
                open_export(folder, f"data.init_args.exports[{i}] ({name})")
                for i, (folder, name) in enumerate(zip(self.exports, self.stage_names))
            ]
            self.check_export_sources(self._entries, [f"data.init_args.exports[{i}]" for i in range(len(self.exports))])
        return self._entries

    def fold_entries(self) -> list[list[Entry]]:
        """Per stage, its fold exports (none in-sample), each checked against the feature file."""
        if self._fold_entries is None:
            self._fold_entries = []
            for i, (folders, name) in enumerate(zip(self.fold_exports, self.stage_names)):
                wheres = [f"data.init_args.fold_exports[{i}][{k}]" for k in range(len(folders))]
                entries = [open_export(folder, f"{where} ({name})") for folder, where in zip(folders, wheres)]
                self.check_export_sources(entries, wheres, [name] * len(entries))
                self._fold_entries.append(entries)
        return self._fold_entries

    def check_export_sources(self, entries: list[Entry], wheres: list[str], names: list[str] | None = None) -> None:
        """Each export records the feature file its stage read (path and content hash); it must be this
        DataModule's file, byte for byte: stage features of one CH-SIMS file with the labels of another that
        shares its ids would otherwise train without a word. A mismatch is one DataError naming both files."""
        own = Path(self.feature_file)
        own_hash = Store(self.cache_dir).content_hash(own)
        for entry, where, name in zip(entries, wheres, names or self.stage_names):
            what = f"{where} ({name}, {entry.path})"
            recorded = entry.meta.get("feature_file_sha256")
            if recorded is None:
                raise DataError(
                    f"{what} records no feature file (an export of an older release); export the stage again "
                    f"(`msa export RUN --outputs features.H` or its pipeline stage) so it can be checked against {own}"
                )
            if recorded != own_hash:
                raise DataError(
                    f"{what} holds features of {entry.meta.get('feature_file', 'another file')} "
                    f"(sha256 {recorded[:12]}), but data.init_args.path reads {own} (sha256 {own_hash[:12]}): "
                    "stage features and labels must come from the same feature file"
                )

    def split_extras(self, split: str, arrays: SplitArrays) -> dict[str, np.ndarray]:
        out = {}
        for i, (entry, name) in enumerate(zip(self.entries(), self.stage_names)):
            if split == "train" and self.fold_exports:
                out[f"H_{name}"] = out_of_fold_rows(self.fold_entries()[i], self.output, arrays.ids, name)
                log.info("H_%s: training rows out of fold, from %d fold runs", name, len(self.fold_exports[i]))
                continue
            out[f"H_{name}"] = aligned_rows(
                entry, split, self.output, arrays.ids, f"data.init_args.exports[{i}] ({name})"
            )
        widths = {name: int(v.shape[1]) for name, v in zip(self.stage_names, out.values())}
        self.feature_widths = widths
        return out

    def data_facts(self) -> DataFacts:
        """The feature file's facts with the width of each stage's exported features."""
        if self.feature_widths is None:
            self.feature_widths = {
                name: int(e.meta["arrays"][f"train/{self.output}"]["shape"][1])
                for name, e in zip(self.stage_names, self.entries())
                if f"train/{self.output}" in e
            }
        return dataclasses.replace(super().data_facts(), feature_widths=dict(self.feature_widths))


class TextFeaturesDataModule(MSADataModule):
    """A DataModule whose split arrays carry BERT token features in ``text`` (``batch.text_feats``),
    computed by the frozen encoder ``text_model`` when the file has no ``text`` array.

    Args:
        path, dataset, ...: as :class:`MSADataModule`.
        text_model: a Hugging Face name or folder (``bert-base-chinese`` for CH-SIMS, as the paper's
            Chinese BERT), or ``tiny-bert`` in tests.
        text_batch_size: samples per encoder call when computing the features.
        fold: a fold run of K-fold stacking (``msa pipeline`` with ``stacking: kfold`` sets it): the ``train``
            split is the training clips outside fold ``fold`` and the clips of that fold form the split
            ``heldout``, the one a fold run exports (:mod:`msa_lightning.data.folds`: ``folds`` folds of whole
            videos, seeded by ``fold_seed``). None (default): the whole training split, no ``heldout``.
        folds, fold_seed: K and the seed of the fold assignment (only read with ``fold``).
    """

    def __init__(
        self,
        path: str,
        text_model: str = "bert-base-chinese",
        text_batch_size: int = 64,
        dataset: str = "sims",
        fold: int | None = None,
        folds: int = 5,
        fold_seed: int = 0,
        **kwargs,
    ) -> None:
        super().__init__(path, dataset=dataset, **kwargs)
        if text_batch_size < 1:
            raise ConfigError(f"data.init_args.text_batch_size: expected an integer >= 1, found {text_batch_size!r}")
        if fold is not None and folds < 2:
            raise ConfigError(f"data.init_args.folds: expected an integer >= 2 (K folds), found {folds!r}")
        if fold is not None and not 0 <= fold < folds:
            raise ConfigError(f"data.init_args.fold: expected a fold in 0..{folds - 1} (folds={folds}), found {fold!r}")
        self.text_model, self.text_batch_size = text_model, text_batch_size
        self.fold, self.folds, self.fold_seed = fold, folds, fold_seed
        self._encoder = None
        self._fingerprint: str | None = None

    def encoder(self):
        """The frozen encoder (loaded once) and a SHA-256 fingerprint of its weights."""
        if self._encoder is None:
            from msa_lightning.nn.text_encoder import TextEncoder

            with torch.random.fork_rng(devices=[]):  # random tiny test models: the same weights every time
                torch.manual_seed(0)
                self._encoder = TextEncoder(self.text_model, finetune=False)
            digest = hashlib.sha256()
            for name, tensor in sorted(self._encoder.state_dict().items()):
                digest.update(name.encode())
                digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
            self._fingerprint = digest.hexdigest()
        return self._encoder, self._fingerprint

    @property
    def provided_inputs(self) -> set[str]:
        return super().provided_inputs | {"text_feats"}  # the file's, else computed by text_model in setup

    def setup(self, stage: str | None = None) -> None:
        if not self.datasets:
            self._load()
            inputs = self._resolve_inputs()
            if inputs is None or "text_feats" in inputs:  # a stage without text never loads the encoder
                self.splits = {split: self.with_text_features(split, arrays) for split, arrays in self.splits.items()}
        super().setup(stage)

    def _load(self) -> None:
        if self.splits:
            return
        super()._load()
        if self.fold is not None:  # after the file's splits are read, before anything is fitted on train
            try:
                self.splits["train"], self.splits[HELDOUT] = split_off_fold(
                    self.splits["train"], self.fold, self.folds, self.fold_seed
                )
            except DataError as err:
                raise DataError(f"data.init_args.folds={self.folds} ({self.feature_file}): {err}") from None
            log.info(
                "%s: fold %d of %d (seed %d): training on %d clips, %d held out",
                self.spec.name,
                self.fold,
                self.folds,
                self.fold_seed,
                len(self.splits["train"]),
                len(self.splits[HELDOUT]),
            )

    @property
    def extra_splits(self) -> tuple[str, ...]:
        """Splits beyond train/valid/test that an export may ask for: ``heldout`` in a fold run."""
        return (HELDOUT,) if self.fold is not None else ()

    @property
    def fold_spec(self) -> dict | None:
        """Which fold a fold run holds out (recorded in its export), None for the whole training split."""
        return None if self.fold is None else {"index": self.fold, "folds": self.folds, "seed": self.fold_seed}

    def with_text_features(self, split: str, arrays: SplitArrays) -> SplitArrays:
        """``arrays`` with ``text``: the file's own, else computed by the frozen encoder (stored)."""
        if arrays.text is not None:
            return arrays
        ids = np.ascontiguousarray(self._text_ids(split, arrays), dtype=np.int64)  # [N, 3, L]
        encoder, fingerprint = self.encoder()
        inputs = {
            "encoder": self.text_model,
            "weights": fingerprint,
            "token_ids": hashlib.sha256(ids.tobytes()).hexdigest(),
            "shape": list(ids.shape),
        }

        @torch.no_grad()
        def build():
            chunks = []
            for start in range(0, len(ids), self.text_batch_size):  # batches, not samples
                part = torch.from_numpy(ids[start : start + self.text_batch_size])
                out = encoder(part[:, 0], part[:, 1], part[:, 2]).last_hidden_state
                chunks.append(out.float().numpy())
            return {"text": np.concatenate(chunks)}, {"split": split, "file": str(self.feature_file)}

        entry = Store(self.cache_dir).get_or_build("frozen_features", inputs, build)
        log.info("%s/%s: BERT token features of %s from %s", self.spec.name, split, self.text_model, entry.path)
        return dataclasses.replace(arrays, text=entry["text"])

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
``msa pipeline`` stage write such exports.
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
    """

    def __init__(
        self,
        path: str,
        exports: list[str],
        stages: list[str] = ["AV", "AT", "VT"],
        output: str = "features.H",
        dataset: str = "sims",
        **kwargs,
    ) -> None:
        super().__init__(path, dataset=dataset, **kwargs)
        if len(exports) != len(stages):
            raise ConfigError(
                f"data.init_args.exports has {len(exports)} folders but data.init_args.stages names "
                f"{len(stages)} stages ({stages}); give one export per stage"
            )
        self.exports, self.stage_names, self.output = [str(e) for e in exports], list(stages), output
        self.feature_widths: dict[str, int] | None = None
        self._entries: list[Entry] | None = None

    def entries(self) -> list[Entry]:
        if self._entries is None:
            self._entries = [
                open_export(folder, f"data.init_args.exports[{i}] ({name})")
                for i, (folder, name) in enumerate(zip(self.exports, self.stage_names))
            ]
            self.check_export_sources(self._entries)
        return self._entries

    def check_export_sources(self, entries: list[Entry]) -> None:
        """Each export records the feature file its stage read (path and content hash); it must be this
        DataModule's file, byte for byte: stage features of one CH-SIMS file with the labels of another that
        shares its ids would otherwise train without a word. A mismatch is one DataError naming both files."""
        own = Path(self.feature_file)
        own_hash = Store(self.cache_dir).content_hash(own)
        for i, (entry, name) in enumerate(zip(entries, self.stage_names)):
            what = f"data.init_args.exports[{i}] ({name}, {entry.path})"
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
    """

    def __init__(
        self,
        path: str,
        text_model: str = "bert-base-chinese",
        text_batch_size: int = 64,
        dataset: str = "sims",
        **kwargs,
    ) -> None:
        super().__init__(path, dataset=dataset, **kwargs)
        if text_batch_size < 1:
            raise ConfigError(f"data.init_args.text_batch_size: expected an integer >= 1, found {text_batch_size!r}")
        self.text_model, self.text_batch_size = text_model, text_batch_size
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

"""``msa predict`` output: one CSV row per utterance (``id``, ``score`` and ``label`` when the data has one)."""

from __future__ import annotations

import csv
from pathlib import Path

import lightning as L
import torch

from msa_lightning.store import atomic_write


class PredictionCollector(L.Callback):
    """Keeps each predict batch's dataset rows (``batch.index``) next to the model's outputs, so rows from
    every DDP rank can be put back in the split's order."""

    def __init__(self) -> None:
        self.rows: list[tuple[int, str, float, float | None]] = []

    def on_predict_epoch_start(self, trainer, pl_module) -> None:
        self.rows = []

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if not isinstance(outputs, dict) or "score" not in outputs:
            return
        index = getattr(batch, "index", None)
        index = index.tolist() if index is not None else [None] * len(outputs["ids"])
        labels = outputs.get("label")
        labels = labels.tolist() if labels is not None else [None] * len(outputs["ids"])
        self.rows += list(zip(index, outputs["ids"], outputs["score"].tolist(), labels))


def run_folder(trainer, ckpt_path: str | None) -> Path:
    """Where a run's files go: the folder of the checkpoint's run, else the logger's folder."""
    if ckpt_path and Path(ckpt_path).is_file():
        folder = Path(ckpt_path).resolve().parent
        return folder.parent if folder.name == "checkpoints" else folder
    return Path(trainer.log_dir or trainer.default_root_dir)


def predict_and_write(trainer, path: str | None, ckpt_path: str | None, **predict_kwargs) -> Path | None:
    """``trainer.predict`` and the predictions as CSV (rank 0 writes it and says where); returns the path."""
    collector = PredictionCollector()
    trainer.callbacks.append(collector)
    try:
        trainer.predict(ckpt_path=ckpt_path, **predict_kwargs)
    finally:
        trainer.callbacks.remove(collector)
    rows = collector.rows
    if torch.distributed.is_available() and torch.distributed.is_initialized() and trainer.world_size > 1:
        gathered = [None] * trainer.world_size
        torch.distributed.all_gather_object(gathered, rows)
        rows = [r for part in gathered for r in part]
    if not trainer.is_global_zero:
        return None
    rows.sort(key=lambda r: (r[0] is None, r[0] or 0))
    split = getattr(trainer.datamodule, "predict_split", "test") if trainer.datamodule is not None else "test"
    out = Path(path) if path else run_folder(trainer, ckpt_path) / f"predictions_{split}.csv"
    has_label = any(r[3] is not None for r in rows)

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["id", "score", *(["label"] if has_label else [])])
            for _, uid, score, label in rows:
                writer.writerow(
                    [uid, f"{score:.6g}", *(["" if label is None else f"{label:.6g}"] if has_label else [])]
                )

    atomic_write(out, write)
    print(f"wrote {len(rows)} predictions ({split} split) to {out}")
    return out

"""The base LightningModule for multimodal sentiment regression.

Subclasses own their network and losses; this class owns what every paper shares:
optimiser parameter groups (pretrained encoder vs the rest), warm-up schedules, the metric
collection of the dataset family for validation and test, and ``predict_step``.

A subclass implements

* ``forward(batch) -> dict`` with at least ``"M"``: the multimodal prediction ``[B]``;
* optionally ``compute_loss(outputs, batch) -> (loss, {name: value})`` (default: L1 on ``M``);
* optionally ``encoder_parameters()`` (default: parameters of ``self.text_encoder`` if present),
  which get ``encoder_lr``/``encoder_weight_decay``.
"""
from __future__ import annotations

import math
from typing import Iterable, Literal

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from msa_lightning.batch import MSABatch
from msa_lightning.metrics import MSAMetrics


class MSARegressionModule(L.LightningModule):
    """Args shared by every model (each paper's config sets them from its tables):

    Args:
        lr: learning rate of the non-pretrained parameters.
        weight_decay: their weight decay.
        encoder_lr: learning rate of the pretrained encoder (``None`` = ``lr``).
        encoder_weight_decay: its weight decay.
        optimizer: ``adam`` or ``adamw``.
        scheduler: ``none``, ``linear`` (warm-up then linear decay to 0) or ``cosine``.
        warmup_ratio: share of the total training steps spent warming up linearly.
        metric_family: ``mosi`` (MOSI/MOSEI), ``sims``, ``simsv2``, or ``auto`` to take the
            datamodule's family at fit/test time.
    """

    def __init__(self, lr: float = 1e-3, weight_decay: float = 0.0, encoder_lr: float | None = None,
                 encoder_weight_decay: float = 0.0, optimizer: Literal["adam", "adamw"] = "adam",
                 scheduler: Literal["none", "linear", "cosine"] = "none", warmup_ratio: float = 0.0,
                 metric_family: Literal["auto", "mosi", "sims", "simsv2"] = "auto") -> None:
        super().__init__()
        self.lr, self.weight_decay = lr, weight_decay
        self.encoder_lr = lr if encoder_lr is None else encoder_lr
        self.encoder_weight_decay = encoder_weight_decay
        self.optimizer_name, self.scheduler_name, self.warmup_ratio = optimizer, scheduler, warmup_ratio
        self.metric_family = metric_family
        self.val_metrics: MSAMetrics | None = None
        self.test_metrics: MSAMetrics | None = None
        if metric_family != "auto":
            self._build_metrics(metric_family)

    # ------------------------------------------------------------------ metrics
    def _build_metrics(self, family: str) -> None:
        self.metric_family = family
        self.val_metrics = MSAMetrics(family, prefix="val/")
        self.test_metrics = MSAMetrics(family, prefix="test/")

    def setup(self, stage: str) -> None:
        if self.val_metrics is None:
            datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
            family = getattr(datamodule, "metric_family", None)
            if family is None:
                raise ValueError("metric_family='auto' needs a datamodule with a `metric_family`; "
                                 "set model.metric_family to mosi, sims or simsv2")
            self._build_metrics(family)
            self.val_metrics.to(self.device)
            self.test_metrics.to(self.device)

    # ------------------------------------------------------------------ losses
    def compute_loss(self, outputs: dict[str, torch.Tensor], batch: MSABatch) -> tuple[torch.Tensor, dict]:
        loss = F.l1_loss(outputs["M"], batch.labels["M"])
        return loss, {}

    def training_step(self, batch: MSABatch, batch_idx: int) -> torch.Tensor:
        outputs = self(batch)
        loss, parts = self.compute_loss(outputs, batch)
        self._log_losses("train", loss, parts, len(batch))
        self.after_training_forward(outputs, batch)
        return loss

    def after_training_forward(self, outputs: dict[str, torch.Tensor], batch: MSABatch) -> None:
        """Hook for per-step state that needs the training outputs (Self-MM's label generation)."""

    def _log_losses(self, prefix: str, loss: torch.Tensor, parts: dict, size: int) -> None:
        sync = prefix != "train"  # evaluation losses are averaged over all ranks
        self.log(f"{prefix}/loss", loss, prog_bar=prefix != "test", batch_size=size, sync_dist=sync)
        for name, value in parts.items():
            self.log(f"{prefix}/{name}", value, batch_size=size, sync_dist=sync)

    def _eval_step(self, batch: MSABatch, metrics: MSAMetrics, prefix: str) -> None:
        outputs = self(batch)
        loss, parts = self.compute_loss(outputs, batch)
        self._log_losses(prefix, loss, parts, len(batch))
        metrics.update(outputs["M"].detach(), batch.labels["M"])

    def validation_step(self, batch: MSABatch, batch_idx: int) -> None:
        self._eval_step(batch, self.val_metrics, "val")

    def on_validation_epoch_end(self) -> None:
        self.log_dict(self.val_metrics.compute(), prog_bar=False)
        self.val_metrics.reset()

    def test_step(self, batch: MSABatch, batch_idx: int) -> None:
        self._eval_step(batch, self.test_metrics, "test")

    def on_test_epoch_end(self) -> None:
        self.log_dict(self.test_metrics.compute())
        self.test_metrics.reset()

    def predict_step(self, batch: MSABatch, batch_idx: int, dataloader_idx: int = 0) -> dict:
        outputs = self(batch)
        return {"ids": list(batch.ids), "score": outputs["M"].detach().float().cpu(),
                "label": batch.labels["M"].detach().float().cpu()}

    # ------------------------------------------------------------------ optimisation
    def encoder_parameters(self) -> Iterable[nn.Parameter]:
        encoder = getattr(self, "text_encoder", None)
        return encoder.parameters() if isinstance(encoder, nn.Module) else []

    def parameter_groups(self) -> list[dict]:
        """Two groups as the papers use: the pretrained encoder and everything else."""
        encoder_ids = {id(p) for p in self.encoder_parameters()}
        encoder = [p for p in self.parameters() if id(p) in encoder_ids and p.requires_grad]
        rest = [p for p in self.parameters() if id(p) not in encoder_ids and p.requires_grad]
        groups = [{"params": rest, "lr": self.lr, "weight_decay": self.weight_decay, "name": "head"}]
        if encoder:
            groups.append({"params": encoder, "lr": self.encoder_lr,
                           "weight_decay": self.encoder_weight_decay, "name": "encoder"})
        return groups

    def configure_optimizers(self):
        cls = torch.optim.AdamW if self.optimizer_name == "adamw" else torch.optim.Adam
        optimizer = cls(self.parameter_groups())
        if self.scheduler_name == "none":
            return optimizer
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = int(self.warmup_ratio * total)
        schedule = _warmup_schedule(self.scheduler_name, warmup, total)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def _warmup_schedule(kind: str, warmup: int, total: int):
    """LR multiplier: linear warm-up over ``warmup`` steps, then linear or cosine decay to 0."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return 1.0 - progress if kind == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor

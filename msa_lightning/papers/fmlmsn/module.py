"""FmlMSN: fine-grained modal label-based multi-stage network (Peng et al., ESWA 2023).

The model is trained in two steps (the paper's Algorithm 1):

1. Three *stage* learners, one per modality pair gamma = (alpha, beta) in {AV, AT, VT}
   (:class:`FmlMSNStage`). Each encodes its two modalities (Section 4.1), fuses them by the
   flattened outer product R_gamma = R_alpha (x) R_beta (Eq. 3), and learns three regression
   tasks at once with hard parameter sharing: SI_alpha(R_alpha), SI_beta(R_beta) (Eq. 4) and
   SI_gamma(R_gamma) (Eq. 5), with the weighted L1 objective of Eq. 6.
2. The *meta-learner* SI_M (:class:`FmlMSNMeta`) reads the saved activations of the second
   layer of each stage's SI_gamma (H_AV, H_AT, H_VT), concatenated (Eq. 7), and learns the
   multimodal label M with L1. Running only this step on saved features is the paper's FmlMSN-L.

Whether saved stage features are still good enough to reuse is decided by Eq. 8
(:func:`retrain_criterion`): the meta-learner's mean 2-class accuracy over ``draws`` random
draws of ``total`` validation samples; below ``threshold`` (0.74 in Section 5.5) the stages
should be retrained.

Labels (``label_source``): ``fine`` trains each task on its own label (unimodal T/A/V and
bimodal AV/AT/VT labels, the file keys ``regression_labels_T`` ... ``regression_labels_VT``);
``multimodal`` trains every task on M (the paper's FmlMSN-m, the only choice on MOSI/MOSEI,
whose public files have no finer labels).

Validation metric of a stage: its bimodal prediction against the label its bimodal task is
trained on (AV/AT/VT under ``fine``, M under ``multimodal``). A stage's job is the bimodal
task; Section 5.4 notes that each stage reaches its best epoch on its own schedule, which only
makes sense when each stage is selected on its own task. Its MAE against M is logged as
``val/mae_vs_M``; the unimodal tasks get the full metric set under ``val/<task>_`` (``val/A_mae``,
``test/T_acc2``, ...), so a stage's test metrics give the rows of the paper's Tables 7-8.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from msa_lightning.batch import MSABatch
from msa_lightning.data.base import SuiteDataModule
from msa_lightning.data.specs import SPLITS
from msa_lightning.errors import ConfigError, DataError
from msa_lightning.metrics import MSAMetrics
from msa_lightning.metrics.msa import compute_msa_metrics
from msa_lightning.output import MSAOutput
from msa_lightning.papers.fmlmsn.config import PAIRS, FmlMSNMetaConfig, FmlMSNStageConfig
from msa_lightning.papers.fmlmsn.net import FmlMSNMetaNet, FmlMSNStageNet, text_length_rule
from msa_lightning.training.module import MSARegressionModule, base_args

log = logging.getLogger(__name__)

#: which labels the stage tasks learn (``FmlMSNStage.task_labels``)
LABEL_SOURCES = ("fine", "multimodal", "multimodal_bimodal")

#: the checkpoint entry holding the Eq. 8 result of the weights it saves
EQ8_KEY = "fmlmsn_eq8"

LABEL_FILE_KEY = {"M": "regression_labels", **{k: f"regression_labels_{k}" for k in ("T", "A", "V", "AV", "AT", "VT")}}


# ---------------------------------------------------------------------------------------- Eq. 8
def binary_accuracy(pred: torch.Tensor, true: torch.Tensor, family: str) -> torch.Tensor:
    """The family's 2-class accuracy: ``acc2`` (CH-SIMS bins [-1, 0], (0, 1]) or ``acc2_has0``
    (MOSI/MOSEI: negative vs non-negative)."""
    key = "acc2_has0" if family == "mosi" else "acc2"
    return compute_msa_metrics(pred, true, family)[key]


def retrain_criterion(
    pred: torch.Tensor, true: torch.Tensor, family: str = "sims", total: int = 10, draws: int = 5, seed: int = 0
) -> float:
    """p of Eq. 8: the mean 2-class accuracy TP/Total over ``draws`` independent draws of ``total``
    distinct validation samples (seeded, so the same predictions give the same p)."""
    n = int(pred.numel())
    if n == 0:
        raise DataError("Eq. 8 retrain criterion: the validation split is empty")
    rng = np.random.default_rng(seed)
    accs = []
    for _ in range(draws):  # a handful of draws of a handful of samples, not a forward pass
        idx = torch.from_numpy(rng.choice(n, size=min(total, n), replace=False))
        accs.append(float(binary_accuracy(pred[idx], true[idx], family)))
    return float(np.mean(accs))


class RetrainCriterion(Metric):
    """Collects validation predictions and labels (DDP-synchronised) and computes p of Eq. 8."""

    full_state_update = False

    def __init__(self, family: str, total: int, draws: int, seed: int) -> None:
        super().__init__()
        self.family, self.total, self.draws, self.seed = family, total, draws, seed
        self.add_state("preds", default=[], dist_reduce_fx="cat")
        self.add_state("target", default=[], dist_reduce_fx="cat")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        self.preds.append(preds.detach().reshape(-1).float())
        self.target.append(target.detach().reshape(-1).float())

    def compute(self) -> torch.Tensor:
        preds, target = dim_zero_cat(self.preds).cpu(), dim_zero_cat(self.target).cpu()
        return torch.tensor(retrain_criterion(preds, target, self.family, self.total, self.draws, self.seed))


# ---------------------------------------------------------------------------------------- modules
def _text_lengths(datamodule, scope: str = "train") -> np.ndarray:
    """Real-token count of every sentence (the L_i of Eqs. 1-2), from the text mask: the training split's
    (``scope="train"``; in a K-fold stacking run the clips it trains on) or every split's (``"all"``: N over the
    whole dataset, a fold run's held-out clips included)."""
    datasets = getattr(datamodule, "datasets", {})
    splits = (
        ["train"]
        if scope == "train"
        else [s for s in (*SPLITS, *getattr(datamodule, "extra_splits", ())) if s in datasets]
    )
    lengths = []
    for split in splits:
        text = getattr(datasets.get(split), "text", None)  # [N, 3, L] ids/mask/segments
        if text is None:
            raise ConfigError(
                f"FmlMSNStage: cannot read the {split} text lengths from the datamodule to "
                "compute L (Eqs. 1-2); set model.init_args.text_len"
            )
        lengths.append(np.asarray(text[:, 1]).sum(axis=1))
    return np.concatenate(lengths)


def _score(
    module: MSARegressionModule,
    batch: MSABatch,
    outputs: MSAOutput,
    metrics,
    prefix: str,
    target: str,
    extra: dict | None = None,
) -> None:
    """Log the loss and its parts as epoch means and score ``outputs.M`` against ``labels[target]``."""
    loss, parts = module.compute_loss(outputs, batch)
    for name, value in {"loss": loss, **parts, **(extra or {})}.items():
        module._mean(f"{prefix}/{name}").update(value.detach(), len(batch))
    metrics.update(outputs.M.detach(), batch.labels[target])


class FmlMSNStage(MSARegressionModule):
    """One stage learner of FmlMSN (Section 4.2, Eqs. 3-6); see the module docstring.

    The network's arguments are the fields of :class:`~msa_lightning.papers.fmlmsn.config.FmlMSNStageConfig`
    (given flat: ``pair``, ``text_len``, Table 3's sizes).

    Args:
        label_source: ``fine`` (unimodal and bimodal labels of the file), ``multimodal`` (M for every
            task: FmlMSN-m as Section 5.3 and the MOSI/MOSEI runs use it) or ``multimodal_bimodal`` (M for
            the bimodal task only, the unimodal tasks keep T/A/V: FmlMSN-m as Table 8's caption words it).
        text_len_lambda: the lambda of Eqs. 1-2 (3) computing ``text_len`` when it is not given.
        w_alpha, w_beta, w_gamma: task weights of Eq. 6 (1 in the paper); 0 drops a task from
            the loss (ablation: ``w_alpha=w_beta=0`` trains the bimodal task alone).
        Optimisation: :class:`~msa_lightning.training.module.MSARegressionModule`'s, with its defaults.
    """

    def __init__(
        self,
        label_source: Literal["fine", "multimodal", "multimodal_bimodal"] = "fine",
        text_len_lambda: float = 3.0,
        w_alpha: float = 1.0,
        w_beta: float = 1.0,
        w_gamma: float = 1.0,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        encoder_lr: float | None = None,
        encoder_weight_decay: float = 0.0,
        param_groups: list[dict] | None = None,
        optimizer: Literal["adam", "adamw"] = "adam",
        scheduler: Literal["none", "linear", "cosine", "constant", "cosine_annealing"] = "none",
        warmup_ratio: float = 0.0,
        annealing_epochs: int = 20,
        metric_family: Literal["auto", "mosi", "sims", "simsv2"] = "auto",
        **net,
    ) -> None:
        super().__init__(**base_args(locals()))
        self.save_hyperparameters()
        self.use_config(FmlMSNStageConfig(**net))
        if label_source not in LABEL_SOURCES:
            raise ConfigError(
                f"model.init_args.label_source: expected one of {list(LABEL_SOURCES)}, found {label_source!r}"
            )
        for name, weight in (("w_alpha", w_alpha), ("w_beta", w_beta), ("w_gamma", w_gamma)):
            if not weight >= 0:
                raise ConfigError(f"model.init_args.{name}: expected a weight >= 0, found {weight!r}")
        self.pair, (self.alpha, self.beta) = self.config.pair, PAIRS[self.config.pair]
        self.task_metrics = nn.ModuleDict()
        if self.val_metrics is not None:
            self._build_task_metrics(self.metric_family)
        self.init_net()

    def _build_metrics(self, family: str) -> None:
        super()._build_metrics(family)
        if hasattr(self, "task_metrics"):  # not yet during the base __init__
            self._build_task_metrics(family)

    def _build_task_metrics(self, family: str) -> None:
        """The unimodal tasks' metrics (the A/V/T rows of Tables 7-8): ``val/A_mae``, ``test/T_acc2``, ..."""
        for prefix in ("val", "test"):
            for task in (self.alpha, self.beta):
                self.task_metrics[f"{prefix}_{task}"] = MSAMetrics(family, prefix=f"{prefix}/{task}_")

    @property
    def net_requires(self) -> tuple[str, ...]:
        return tuple(name for name, m in (("audio_dim", "A"), ("vision_dim", "V")) if m in self.pair)

    def build_net(self) -> FmlMSNStageNet:
        return FmlMSNStageNet(self.config)

    @property
    def required_inputs(self) -> set[str]:
        fields = set()
        if "T" in self.pair:
            fields |= {"text_mask", "text_feats"}
        if "A" in self.pair:
            fields |= {"audio", "audio_lengths"}
        if "V" in self.pair:
            fields |= {"vision", "vision_lengths"}
        return fields

    def task_labels(self) -> dict[str, str]:
        """Which label key each task learns: ``{alpha: ..., beta: ..., gamma: ...}``."""
        source = self.hparams.label_source
        unimodal = "M" if source == "multimodal" else None
        bimodal = "M" if source in ("multimodal", "multimodal_bimodal") else self.pair
        return {self.alpha: unimodal or self.alpha, self.beta: unimodal or self.beta, self.pair: bimodal}

    def check_labels(self, available, where: str = "the feature file") -> None:
        """One DataError naming every label the configured tasks need and ``where`` lacks."""
        missing = [k for k in dict.fromkeys(self.task_labels().values()) if k not in available]
        if missing:
            keys = ", ".join(LABEL_FILE_KEY[k] for k in missing)
            raise DataError(
                f"FmlMSNStage pair {self.pair} with model.init_args.label_source={self.hparams.label_source!r} needs "
                f"the labels {', '.join(missing)} (keys {keys}), which {where} does not have (it has "
                f"{', '.join(sorted(available)) or 'no labels'}); add them (see configs/fmlmsn/README.md) or set "
                "model.init_args.label_source=multimodal"
            )

    def setup(self, stage: str) -> None:
        super().setup(stage)
        dm = self._datamodule()
        splits = getattr(dm, "splits", None) or {}
        where = f"{getattr(dm, 'feature_file', 'the feature file')} (split 'train')"
        if "train" in splits and stage in ("fit", "validate", "test"):
            self.check_labels(splits["train"].labels, where)
        text = splits["train"].text if "train" in splits else None
        if "T" in self.pair and text is not None and text.shape[2] != self.config.text_dim:
            raise ConfigError(
                f"model.init_args.text_dim={self.config.text_dim}, but the text features of {where} "
                f"have size {text.shape[2]}"
            )
        if "T" in self.pair and self.config.text_len is None and dm is not None:  # also for test/predict
            length = text_length_rule(_text_lengths(dm, self.config.text_len_scope), self.hparams.text_len_lambda)
            self.net.text_len = length
            self.set_hparams(text_len=length)  # a checkpoint rebuilds the network with the same L
            log.info(
                "FmlMSN %s: text length L = %d (Eqs. 1-2, lambda %g, N: %s sentences)",
                self.pair,
                length,
                self.hparams.text_len_lambda,
                self.config.text_len_scope,
            )

    def compute_loss(self, outputs: MSAOutput, batch: MSABatch) -> tuple[torch.Tensor, dict]:
        """Eq. 6: w_alpha L1(alpha) + w_beta L1(beta) + w_gamma L1(gamma), each on the label
        :meth:`task_labels` names. The parts are logged as ``loss_<task>``."""
        self.check_labels(batch.labels, "this batch")
        preds = {**outputs.unimodal, self.pair: outputs.M}
        parts = {f"loss_{task}": F.l1_loss(preds[task], batch.labels[key]) for task, key in self.task_labels().items()}
        hp = self.hparams
        loss = (
            hp.w_alpha * parts[f"loss_{self.alpha}"]
            + hp.w_beta * parts[f"loss_{self.beta}"]
            + hp.w_gamma * parts[f"loss_{self.pair}"]
        )
        return loss, parts

    def _eval_step(self, batch: MSABatch, metrics, prefix: str) -> None:
        """Scores the bimodal prediction against the label its task learns (see the module
        docstring); its MAE against M is logged as ``mae_vs_M``."""
        outputs = self(batch)
        if not batch.labels:
            return
        extra = {"mae_vs_M": F.l1_loss(outputs.M, batch.labels["M"])} if "M" in batch.labels else {}
        labels = self.task_labels()
        _score(self, batch, outputs, metrics, prefix, labels[self.pair], extra)
        for task in (self.alpha, self.beta):
            self.task_metrics[f"{prefix}_{task}"].update(outputs.unimodal[task].detach(), batch.labels[labels[task]])

    def _end_eval_epoch(self, metrics, prefix: str) -> None:
        super()._end_eval_epoch(metrics, prefix)
        for task in (self.alpha, self.beta):
            task_metrics = self.task_metrics[f"{prefix}_{task}"]
            if task_metrics.update_called:
                self.log_dict(task_metrics.compute(), sync_dist=True)
            task_metrics.reset()


class FmlMSNMeta(MSARegressionModule):
    """The meta-learner SI_M of FmlMSN (Section 4.3, Eq. 7) on saved stage features, with the
    retrain criterion of Eq. 8.

    Reads ``batch.extras["H_<stage>"]`` (put there by
    :class:`~msa_lightning.papers.fmlmsn.data.StageFeaturesDataModule`) for every name in
    ``stages``, concatenates them (F of Eq. 7) and predicts M with L1.

    The network's arguments are the fields of :class:`~msa_lightning.papers.fmlmsn.config.FmlMSNMetaConfig`
    (given flat: ``stages``, ``stage_fdim``, ``fdim``, ``fdrp``).

    Args:
        retrain_threshold, retrain_total, retrain_draws, retrain_seed: Eq. 8 (0.74, 10 samples,
            5 draws in Section 5.5; the seed is ours). Each validation logs ``val/eq8_p`` and
            ``val/eq8_retrain`` (1 = the stages should be retrained); the end of fit logs the
            decision and writes it to ``eq8.json`` in the run folder.
        Optimisation: :class:`~msa_lightning.training.module.MSARegressionModule`'s, with its defaults.
    """

    def __init__(
        self,
        retrain_threshold: float = 0.74,
        retrain_total: int = 10,
        retrain_draws: int = 5,
        retrain_seed: int = 0,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        encoder_lr: float | None = None,
        encoder_weight_decay: float = 0.0,
        param_groups: list[dict] | None = None,
        optimizer: Literal["adam", "adamw"] = "adam",
        scheduler: Literal["none", "linear", "cosine", "constant", "cosine_annealing"] = "none",
        warmup_ratio: float = 0.0,
        annealing_epochs: int = 20,
        metric_family: Literal["auto", "mosi", "sims", "simsv2"] = "auto",
        **net,
    ) -> None:
        super().__init__(**base_args(locals()))
        self.save_hyperparameters()
        self.use_config(FmlMSNMetaConfig(**net))
        if retrain_total < 1 or retrain_draws < 1:
            raise ConfigError(
                f"model.init_args.retrain_total and retrain_draws must be >= 1, found "
                f"{retrain_total} and {retrain_draws}"
            )
        self.eq8: RetrainCriterion | None = None
        self.eq8_result: dict | None = None
        self.init_net()

    @property
    def net_requires(self) -> tuple[str, ...]:
        return ()

    def build_net(self) -> FmlMSNMetaNet:
        return FmlMSNMetaNet(self.config)

    @property
    def required_inputs(self) -> set[str]:
        return set()  # only the stage features (batch.extras) and the labels

    def setup(self, stage: str) -> None:
        super().setup(stage)
        datamodule = self._datamodule()
        widths = datamodule.data_facts().feature_widths if isinstance(datamodule, SuiteDataModule) else None
        if widths is not None:
            for name in self.config.stages:
                if name not in widths:
                    raise ConfigError(
                        f"model.init_args.stages names {name!r}, but data.init_args.stages has only {sorted(widths)}"
                    )
                if widths[name] != self.config.stage_fdim:
                    raise ConfigError(
                        f"model.init_args.stage_fdim={self.config.stage_fdim}, but the exported "
                        f"features H_{name} have {widths[name]} columns"
                    )
        if self.eq8 is None:
            hp = self.hparams
            self.eq8 = RetrainCriterion(self.metric_family, hp.retrain_total, hp.retrain_draws, hp.retrain_seed).to(
                self.device
            )

    def _eval_step(self, batch: MSABatch, metrics, prefix: str) -> None:
        outputs = self(batch)
        if "M" not in batch.labels:
            return
        _score(self, batch, outputs, metrics, prefix, "M")
        if prefix == "val":
            self.eq8.update(outputs.M, batch.labels["M"])

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        if not self.eq8.update_called:
            return
        p = float(self.eq8.compute())
        self.eq8.reset()
        hp = self.hparams
        retrain = p < hp.retrain_threshold
        self.log_dict({"val/eq8_p": p, "val/eq8_retrain": float(retrain)})
        self.eq8_result = {
            "p": p,
            "threshold": hp.retrain_threshold,
            "total": hp.retrain_total,
            "draws": hp.retrain_draws,
            "seed": hp.retrain_seed,
            "epoch": int(self.current_epoch),
            "decision": "retrain the stages" if retrain else "reuse the stages",
            "retrain": bool(retrain),
        }

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        if self.eq8_result is not None:  # the criterion of the weights this checkpoint holds
            checkpoint[EQ8_KEY] = dict(self.eq8_result)

    def best_eq8(self) -> dict | None:
        """Eq. 8 of the checkpoint that is tested and exported: the best one of the checkpoint callback
        (read back from it), else the last validation's (no monitored checkpoint)."""
        callback = getattr(self.trainer, "checkpoint_callback", None)
        best = getattr(callback, "best_model_path", "") if callback is not None else ""
        if best and Path(best).is_file():
            saved = torch.load(best, map_location="cpu", weights_only=False).get(EQ8_KEY)
            if saved is not None:
                return {**saved, "checkpoint": str(best)}
        return None if self.eq8_result is None else {**self.eq8_result, "checkpoint": None}

    def on_fit_end(self) -> None:
        if self.eq8_result is None or not self.trainer.is_global_zero:
            return
        r = self.best_eq8()
        log.warning(
            "FmlMSN Eq. 8: p = %.3f (mean 2-class accuracy over %d draws of %d validation samples, "
            "epoch %d, %s), threshold %.2f -> %s",
            r["p"],
            r["draws"],
            r["total"],
            r["epoch"],
            f"best checkpoint {Path(r['checkpoint']).name}" if r["checkpoint"] else "last epoch",
            r["threshold"],
            r["decision"],
        )
        # only into a run folder: without a logger, log_dir would be the working directory
        folder = self.trainer.log_dir if self.trainer.logger is not None else None
        if folder:
            Path(folder).mkdir(parents=True, exist_ok=True)
            (Path(folder) / "eq8.json").write_text(json.dumps(r, indent=1))

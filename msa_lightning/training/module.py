"""The base LightningModule for multimodal sentiment regression.

A paper's module is thin: it builds its network as ``self.net`` (a plain ``nn.Module`` that maps an
:class:`~msa_lightning.batch.MSABatch` to an :class:`~msa_lightning.output.MSAOutput`), and
defines its losses. This class owns what every paper shares:

* **data-shaped arguments** (``audio_dim``, ``vision_dim``, ``text_dim``, ``label_bound``, ``num_train_samples``,
  ``metric_family``): ``None``/``"auto"`` means "from the data". In ``setup`` they are filled from
  ``trainer.datamodule.data_facts()`` by :func:`~msa_lightning.data.base.follow_data`, an explicit value that
  conflicts with the data is a :class:`~msa_lightning.errors.ConfigError` naming both, and a network that needs
  them is built then;
* **optimisation**: parameter groups as data (:meth:`parameter_groups`), no weight decay on biases and
  normalisation weights, warm-up schedules from ``transformers``;
* **train/eval modes**: frozen extractors (:func:`~msa_lightning.nn.pretrained.freeze`) stay in eval
  mode when the module is put in training mode;
* **losses and metrics**: the loss and its parts are logged per training step, and as sample-weighted
  means over the epoch (``train/loss_epoch``, ``val/loss``, ``test/loss``, ...) that are exact under DDP
  with uneven shards; the metric collection of the dataset family for validation and test;
* **unlabeled data**: evaluation and prediction work on batches without ``labels["M"]``.

A subclass implements

* a network config (:class:`~msa_lightning.training.config.NetConfig`, ``papers/<name>/config.py``): its
  ``__init__`` takes its own arguments, then ``**net``, builds ``XConfig(**net)`` and hands it to
  :meth:`use_config` (after ``save_hyperparameters()``), so each network hyper-parameter is declared once
  and still a flat ``model.init_args.<name>`` key;
* ``build_net() -> nn.Module`` from ``self.config`` and calls :meth:`init_net` at the end of ``__init__``;
* ``net_requires`` (the hparams the network cannot be built without; default ``audio_dim``, ``vision_dim``),
  ``required_inputs`` (batch fields its network reads) and ``encoder_prefix`` (its text encoder);
* optionally ``compute_loss(outputs, batch) -> (loss, {name: value})`` (default: L1 on ``M``).
"""

from __future__ import annotations

import inspect
import math
from dataclasses import asdict, replace
from typing import Literal

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from msa_lightning.batch import MSABatch
from msa_lightning.data.base import SuiteDataModule, follow_data
from msa_lightning.errors import ConfigError, DataError
from msa_lightning.metrics import MSAMetrics, SampleMean
from msa_lightning.output import MSAOutput
from msa_lightning.training.config import NetConfig, field_names

#: hparams whose value follows from the data (:class:`~msa_lightning.data.base.DataFacts`); None = take it from there
DATA_ARGS = ("audio_dim", "vision_dim", "text_dim", "label_bound", "num_train_samples")
#: the fields a frame-feature model reads by default
FRAME_INPUTS = frozenset(
    {"text_ids", "text_mask", "text_segment", "audio", "audio_lengths", "vision", "vision_lengths"}
)
GROUP_KEYS = {"name", "prefixes", "lr", "weight_decay"}
SCHEDULES = ("none", "linear", "cosine", "constant", "cosine_annealing")
STEP_SCHEDULES = ("linear", "cosine", "constant")  # stepped every optimiser step (the learning rate moves per step)


def _key(name: str) -> str:
    return f"model.init_args.{name}"


def check_optim_args(lr: float, weight_decay: float, warmup_ratio: float, where: str = "") -> None:
    """Reject learning rates <= 0, negative weight decay and warm-up ratios outside [0, 1)."""
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ConfigError(f"{_key(where + 'lr')} must be a positive number, got {lr!r}")
    if not (isinstance(weight_decay, (int, float)) and weight_decay >= 0):
        raise ConfigError(f"{_key(where + 'weight_decay')} must be >= 0, got {weight_decay!r}")
    if not 0 <= warmup_ratio < 1:
        raise ConfigError(f"{_key('warmup_ratio')} must be in [0, 1), got {warmup_ratio!r}")


def _no_decay(name: str, owner: nn.Module) -> bool:
    """Biases and normalisation weights get no weight decay (as the reference trainers do)."""
    norms = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._NormBase)
    return "bias" in name.rsplit(".", 1)[-1] or isinstance(owner, norms) or "LayerNorm" in type(owner).__name__


class MSARegressionModule(L.LightningModule):
    """Args shared by every model (each paper's config sets them from its tables):

    Args:
        lr: learning rate of the parameters no group claims.
        weight_decay: their weight decay.
        encoder_lr: shorthand for a group ``encoder`` holding the text encoder (``None`` = ``lr``).
        encoder_weight_decay: its weight decay.
        param_groups: more groups, each ``{"name", "prefixes": [...], "lr", "weight_decay"}``
            (``lr``/``weight_decay`` default to the module's). A parameter belongs to the group with
            the longest prefix of its name (``net.audio_rnn`` matches ``net.audio_rnn.rnn.weight_ih_l0``;
            names are those of ``module.named_parameters()``); the rest get ``lr``/``weight_decay``.
            Biases and LayerNorm/BatchNorm weights never get weight decay.
        optimizer: ``adam`` or ``adamw``.
        scheduler: ``none``, ``linear`` (warm-up then linear decay to 0), ``cosine`` (warm-up then
            cosine decay to 0) or ``constant`` (warm-up then constant), from ``transformers``; or
            ``cosine_annealing``: torch's ``CosineAnnealingLR`` stepped once per epoch with period
            ``annealing_epochs`` (down to 0 over that many epochs, then back up; what some authors' scripts do).
        warmup_ratio: share of the total training steps spent warming up linearly, in [0, 1).
        annealing_epochs: ``T_max`` of ``cosine_annealing``, in epochs.
        metric_family: ``mosi`` (MOSI/MOSEI), ``sims``, ``simsv2``, or ``auto`` to take the
            datamodule's family at fit/test time.
    """

    #: dotted path of the pretrained text encoder inside this module (``None``: no encoder)
    encoder_prefix: str | None = None

    def __init__(
        self,
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
    ) -> None:
        super().__init__()
        check_optim_args(lr, weight_decay, warmup_ratio)
        if encoder_lr is not None or encoder_weight_decay:
            check_optim_args(lr if encoder_lr is None else encoder_lr, encoder_weight_decay, warmup_ratio, "encoder_")
        if scheduler not in SCHEDULES:
            raise ConfigError(f"{_key('scheduler')} must be one of {SCHEDULES}, got {scheduler!r}")
        if int(annealing_epochs) < 1:
            raise ConfigError(f"{_key('annealing_epochs')} must be >= 1, got {annealing_epochs!r}")
        self.annealing_epochs = int(annealing_epochs)
        self.lr, self.weight_decay = lr, weight_decay
        self.encoder_lr_arg = encoder_lr
        self.encoder_lr = lr if encoder_lr is None else encoder_lr
        self.encoder_weight_decay = encoder_weight_decay
        self.group_specs = _check_group_specs(param_groups, lr, weight_decay)
        self.optimizer_name, self.scheduler_name, self.warmup_ratio = optimizer, scheduler, warmup_ratio
        self.metric_family = metric_family
        self.config: NetConfig | None = None  # the network's hyper-parameters (use_config)
        self.net: nn.Module | None = None
        self._lr_logged_epoch = -1
        self.val_metrics: MSAMetrics | None = None
        self.test_metrics: MSAMetrics | None = None
        self.loss_means = nn.ModuleDict()  # sample-weighted epoch means of the losses, created on first use
        if metric_family != "auto":
            self._build_metrics(metric_family)

    # ------------------------------------------------------------------ the network
    def use_config(self, config: NetConfig) -> None:
        """Keep the network's config and record every field in ``hparams``, defaults included (after
        ``save_hyperparameters()``, which records only the keys given), so a checkpoint of a module built
        in Python carries the whole network config, flat as LightningCLI writes it."""
        self.config = config
        self.hparams.update(asdict(config))

    def set_hparams(self, **values) -> None:
        """Set arguments found only at setup (data facts, a computed length): in ``hparams``, so a checkpoint
        rebuilds the network with them, and in the config those that are network fields (a copy: configs are
        frozen). The one place both change; ``self.hparams.update`` alone would leave the config behind."""
        self.hparams.update(values)
        if self.config is not None:
            names = field_names(type(self.config))
            self.config = replace(self.config, **{k: v for k, v in values.items() if k in names})

    @property
    def net_requires(self) -> tuple[str, ...]:
        """hparams the network cannot be built without."""
        return ("audio_dim", "vision_dim")

    @property
    def required_inputs(self) -> set[str]:
        """The batch fields the network reads (the DataModule loads only these)."""
        return set(FRAME_INPUTS)

    def build_net(self) -> nn.Module:
        raise NotImplementedError(f"{type(self).__name__} must implement build_net()")

    def init_net(self) -> None:
        """Build the network now if every argument it needs is known, else in ``setup`` from the data."""
        if all(self.hparams.get(k) is not None for k in self.net_requires):
            self.net = self.build_net()

    def forward(self, batch: MSABatch) -> MSAOutput:
        if self.net is None:
            missing = [_key(k) for k in self.net_requires if self.hparams.get(k) is None]
            raise ConfigError(
                f"{type(self).__name__}'s network is built from the data at setup: set {missing} "
                f"to use it before (or attach it to a trainer with a datamodule)"
            )
        return self.net(batch)

    def train(self, mode: bool = True):
        """Training mode for every module except frozen extractors, which stay in eval mode."""
        super().train(mode)
        if mode:
            for module in self.modules():
                if getattr(module, "frozen_extractor", False):
                    module.eval()
        return self

    # ------------------------------------------------------------------ data facts
    def _datamodule(self):
        return getattr(self.trainer, "datamodule", None) if self._trainer is not None else None

    def apply_data_facts(self, datamodule) -> None:
        """Fill unset data-shaped hparams (:data:`DATA_ARGS`) and the metric family from the facts of a suite
        DataModule (:func:`~msa_lightning.data.base.follow_data`: a conflict is a ConfigError naming both). Another
        LightningDataModule gives no facts: the settings must then be given."""
        family = self.metric_family
        if isinstance(datamodule, SuiteDataModule):
            settings = {name: self.hparams[name] for name in DATA_ARGS if name in self.hparams}
            settings["metric_family"] = family
            follow_data(settings, datamodule.data_facts(), datamodule.describe())
            family = settings.pop("metric_family")
            self.set_hparams(**settings)  # checkpoints (and the network config) then hold the values found
        if family == "auto":
            raise ConfigError(
                f"{_key('metric_family')}='auto' needs a datamodule that knows its metric family; "
                f"set it to mosi, sims or simsv2"
            )
        if family != self.metric_family:
            self._build_metrics(family)

    def setup(self, stage: str) -> None:
        datamodule = self._datamodule()
        if datamodule is not None:
            self.apply_data_facts(datamodule)
        elif self.val_metrics is None:
            raise ConfigError(f"{_key('metric_family')}='auto' needs a datamodule; set it to mosi, sims or simsv2")
        if self.net is None:
            missing = [_key(k) for k in self.net_requires if self.hparams.get(k) is None]
            if missing:
                raise ConfigError(
                    f"{', '.join(missing)} not set and the datamodule does not give "
                    f"{'them' if len(missing) > 1 else 'it'}: set {missing[0]}"
                )
            self.net = self.build_net()

    def _build_metrics(self, family: str) -> None:
        self.metric_family = family
        self.val_metrics = MSAMetrics(family, prefix="val/")
        self.test_metrics = MSAMetrics(family, prefix="test/")

    # ------------------------------------------------------------------ losses
    def compute_loss(self, outputs: MSAOutput, batch: MSABatch) -> tuple[torch.Tensor, dict]:
        loss = F.l1_loss(outputs.M, labels_of(batch))
        return loss, {}

    def training_step(self, batch: MSABatch, batch_idx: int) -> torch.Tensor:
        outputs = self(batch)
        loss, parts = self.compute_loss(outputs, batch)
        size = len(batch)
        self.log("train/loss", loss.detach(), prog_bar=True, batch_size=size)
        for name, value in parts.items():
            self.log(f"train/{name}", value, batch_size=size)
        self._mean("train/loss_epoch").update(loss.detach(), size)
        if self.scheduler_name in STEP_SCHEDULES:
            self._log_learning_rates(size, on_step=True)
        elif self._lr_logged_epoch != self.current_epoch:  # constant within an epoch: once (each log call costs)
            self._log_learning_rates(size, on_step=False)
            self._lr_logged_epoch = self.current_epoch
        self.after_training_forward(outputs, batch)
        return loss

    def after_training_forward(self, outputs: MSAOutput, batch: MSABatch) -> None:
        """Hook for per-step state that needs the training outputs (Self-MM's label generation)."""

    def on_train_epoch_end(self) -> None:
        self._log_means("train/")

    def _mean(self, name: str) -> SampleMean:
        """The epoch mean ``name`` over samples (DDP-synchronised by torchmetrics)."""
        key = name.replace("/", ":")
        if key not in self.loss_means:
            self.loss_means[key] = SampleMean().to(self.device)
        return self.loss_means[key]

    def _log_means(self, prefix: str) -> None:
        """Log and reset the epoch means under ``prefix`` (each is the mean over every sample of every rank)."""
        for key in sorted(self.loss_means):
            name = key.replace(":", "/")
            if name.startswith(prefix):
                metric = self.loss_means[key]
                if metric.update_called:
                    self.log(name, metric.compute(), prog_bar=name in ("val/loss", "train/loss_epoch"), sync_dist=True)
                metric.reset()

    def _eval_step(self, batch: MSABatch, metrics: MSAMetrics, prefix: str) -> None:
        outputs = self(batch)
        if "M" not in batch.labels:  # unlabeled data: nothing to score
            return
        loss, parts = self.compute_loss(outputs, batch)
        for name, value in {"loss": loss, **parts}.items():
            self._mean(f"{prefix}/{name}").update(value.detach(), len(batch))
        metrics.update(outputs.M.detach(), batch.labels["M"])

    def _end_eval_epoch(self, metrics: MSAMetrics, prefix: str) -> None:
        self._log_means(prefix + "/")
        if metrics.update_called:
            self.log_dict(metrics.compute(), sync_dist=True)
        metrics.reset()

    def validation_step(self, batch: MSABatch, batch_idx: int) -> None:
        self._eval_step(batch, self.val_metrics, "val")

    def on_validation_epoch_end(self) -> None:
        self._end_eval_epoch(self.val_metrics, "val")

    def test_step(self, batch: MSABatch, batch_idx: int) -> None:
        self._eval_step(batch, self.test_metrics, "test")

    def on_test_epoch_end(self) -> None:
        self._end_eval_epoch(self.test_metrics, "test")

    def predict_step(self, batch: MSABatch, batch_idx: int, dataloader_idx: int = 0) -> dict:
        """``{"ids", "score"}``, and ``"label"`` when the batch is labeled."""
        outputs = self(batch)
        result = {"ids": list(batch.ids), "score": outputs.M.detach().float().cpu()}
        if "M" in batch.labels:
            result["label"] = batch.labels["M"].detach().float().cpu()
        return result

    # ------------------------------------------------------------------ optimisation
    def group_specs_with_encoder(self) -> list[dict]:
        """``param_groups`` plus the ``encoder`` group of the ``encoder_lr`` shorthand (when the module
        has a trainable text encoder that no given group already names)."""
        specs = list(self.group_specs)
        prefix = self.encoder_prefix
        if prefix is None or not _has_submodule(self, prefix):
            return specs
        if not any(p.requires_grad for p in self.get_submodule(prefix).parameters()):
            return specs  # a frozen encoder: nothing to optimise
        taken = any(s["name"] == "encoder" or prefix in s["prefixes"] for s in specs)
        if taken:
            if self.encoder_lr_arg is not None:
                raise ConfigError(
                    f"{_key('encoder_lr')} and a {_key('param_groups')} entry both set the text "
                    f"encoder's learning rate ({prefix}): keep one"
                )
            return specs
        return specs + [
            {"name": "encoder", "prefixes": [prefix], "lr": self.encoder_lr, "weight_decay": self.encoder_weight_decay}
        ]

    def parameter_groups(self) -> list[dict]:
        """Optimiser groups: ``default`` (``lr``/``weight_decay``), then one per named group; each split
        into a decayed part (``name``) and an undecayed part (``name/no_decay``: biases, norm weights)."""
        specs = [
            {"name": "default", "prefixes": [], "lr": self.lr, "weight_decay": self.weight_decay},
            *self.group_specs_with_encoder(),
        ]
        owners = {
            f"{mod_name}.{p_name}" if mod_name else p_name: module
            for mod_name, module in self.named_modules()
            for p_name, _ in module.named_parameters(recurse=False)
        }
        by_prefix = {}
        for index, spec in enumerate(specs):
            for prefix in spec["prefixes"]:
                if prefix in by_prefix:
                    raise ConfigError(
                        f"{_key('param_groups')}: prefix {prefix!r} is in two groups "
                        f"({specs[by_prefix[prefix]]['name']!r} and {spec['name']!r})"
                    )
                by_prefix[prefix] = index
        members: dict[tuple[int, bool], list[nn.Parameter]] = {}
        used = set()
        for name, param in self.named_parameters():
            if not param.requires_grad:
                continue
            matches = [p for p in by_prefix if name == p or name.startswith(p + ".")]
            best = max(matches, key=len) if matches else None
            used.add(best)
            index = by_prefix[best] if best is not None else 0
            members.setdefault((index, _no_decay(name, owners[name])), []).append(param)
        unused = [p for p in by_prefix if p not in used]
        if unused:
            raise ConfigError(
                f"{_key('param_groups')}: prefix {unused[0]!r} matches no trainable parameter "
                f"(names look like {next(n for n, _ in self.named_parameters())!r})"
            )
        groups = []
        for index, spec in enumerate(specs):
            for no_decay in (False, True):
                params = members.get((index, no_decay))
                if params:
                    groups.append(
                        {
                            "params": params,
                            "lr": spec["lr"],
                            "name": spec["name"] + ("/no_decay" * no_decay),
                            "weight_decay": 0.0 if no_decay else spec["weight_decay"],
                        }
                    )
        return groups

    def _log_learning_rates(self, size: int, on_step: bool) -> None:
        """``lr/<group>``: every step under a per-step schedule, else once per epoch (in the epoch's row)."""
        if self._trainer is None or not self.trainer.optimizers:
            return
        for group in self.trainer.optimizers[0].param_groups:
            name = group.get("name")
            if name and not name.endswith("/no_decay"):
                self.log(f"lr/{name}", float(group["lr"]), batch_size=size, on_step=on_step, on_epoch=not on_step)

    def configure_optimizers(self):
        cls = torch.optim.AdamW if self.optimizer_name == "adamw" else torch.optim.Adam
        optimizer = cls(self.parameter_groups())
        if self.scheduler_name == "none":
            return optimizer
        if self.scheduler_name == "cosine_annealing":
            scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=self.annealing_epochs)
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}
        import transformers

        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = int(self.warmup_ratio * total)
        if self.scheduler_name == "constant":
            scheduler = transformers.get_constant_schedule_with_warmup(optimizer, warmup)
        else:
            make = {
                "linear": transformers.get_linear_schedule_with_warmup,
                "cosine": transformers.get_cosine_schedule_with_warmup,
            }[self.scheduler_name]
            scheduler = make(optimizer, warmup, total)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def base_args(arguments: dict) -> dict:
    """The arguments of :class:`MSARegressionModule` among ``arguments``, a subclass ``__init__``'s ``locals()``.

    A paper module repeats the base signature with its paper's defaults (so LightningCLI and ``--print_config``
    show them; its one ``**`` is the network config's) and passes them on with
    ``super().__init__(**base_args(locals()))`` rather than a second list."""
    names = inspect.signature(MSARegressionModule.__init__).parameters
    return {name: value for name, value in arguments.items() if name in names and name != "self"}


def labels_of(batch: MSABatch, key: str = "M") -> torch.Tensor:
    """The labels ``key`` of a batch a loss needs; unlabeled data gets a clear error instead of a KeyError."""
    labels = batch.labels.get(key)
    if labels is None:
        raise DataError(
            f"this batch has no labels {key!r} (it has {sorted(batch.labels) or 'none'}): training "
            f"needs labeled data; unlabeled data can only be evaluated or predicted"
        )
    return labels


def _has_submodule(module: nn.Module, path: str) -> bool:
    try:
        module.get_submodule(path)
    except AttributeError:
        return False
    return True


def _check_group_specs(groups: list[dict] | None, lr: float, weight_decay: float) -> list[dict]:
    """Validate ``param_groups`` and fill each group's ``lr``/``weight_decay`` defaults."""
    specs, names = [], {"default"}
    for i, group in enumerate(groups or []):
        where = f"param_groups[{i}]"
        if not isinstance(group, dict):
            raise ConfigError(f"{_key(where)} must be a mapping with keys {sorted(GROUP_KEYS)}, got {group!r}")
        unknown = set(group) - GROUP_KEYS
        if unknown:
            raise ConfigError(f"{_key(where)} has unknown keys {sorted(unknown)}; expected {sorted(GROUP_KEYS)}")
        name, prefixes = group.get("name"), group.get("prefixes")
        if not isinstance(name, str) or not name or name in names:
            raise ConfigError(f"{_key(where + '.name')} must be a new, non-empty name, got {name!r}")
        if isinstance(prefixes, str):
            prefixes = [prefixes]
        if not prefixes or not all(isinstance(p, str) and p for p in prefixes):
            raise ConfigError(
                f"{_key(where + '.prefixes')} must be a non-empty list of module names "
                f"(e.g. [net.audio_rnn]), got {prefixes!r}"
            )
        spec = {
            "name": name,
            "prefixes": list(prefixes),
            "lr": group.get("lr", lr),
            "weight_decay": group.get("weight_decay", weight_decay),
        }
        check_optim_args(spec["lr"], spec["weight_decay"], 0.0, where + ".")
        names.add(name)
        specs.append(spec)
    return specs

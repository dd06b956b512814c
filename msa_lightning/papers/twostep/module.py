"""TwoStepMSA: pretrained extractors on raw clips, SF/TFN/MulT fusion, single-task, joint and two-step
multi-task training (Hai, Liu and Elhilali, ICASSP 2024).

Network (paper Fig. 1, Sections 3.1-3.4):

* **Extractors** (3.2), each optional by ``modalities`` (the subsets of Table 4):
  text: BERT, last hidden layer as the sequence, its ``[CLS]`` vector as the global one;
  audio: HuBERT (:class:`~msa_lightning.nn.audio_encoder.AudioEncoder`), last layer, global = mean over
  valid frames; visual: Video Swin (:class:`~msa_lightning.nn.video_swin.VideoSwinEncoder`), sequence =
  mean over space, global = mean over valid time and space. They read the raw fields of
  :class:`~msa_lightning.data.raw.RawMediaDataModule` batches (``text_ids``, ``waveform``, ``frames``).
* **Fusion** (3.3, ``fusion``): ``sf`` concatenates the global vectors; ``tfn`` is the tensor fusion
  (outer product of ``[g; 1]`` vectors, :func:`~msa_lightning.nn.fusion.tensor_fusion`) of the global
  vectors; ``mult`` is the Multimodal Transformer (:class:`~msa_lightning.nn.mult.MulT`) over the
  sequences (six cross-modal and three self-attention transformers for three modalities; two and two
  for a pair).
* **Heads** (3.4): one fully connected head per extractor (T, A, V, on its global vector) and the
  multimodal head M on the fused vector; each predicts a sentiment score.

Losses: L1 per task, ``L_k = mean |y_hat_k - y_k|`` (Eq. 1), combined as ``L = sum_k alpha_k L_k``
(Eq. 2) with ``alpha_M``, ``alpha_T``, ``alpha_A``, ``alpha_V`` as settings.

Regimes (``regime``; the rows of Table 1):

* ``single``: M only (no unimodal heads), everything trained end to end;
* ``joint``: the unimodal heads of the chosen modalities and M, end to end, with Eq. 2;
* ``step1``: one extractor (``step1_modality``) and its head, fine-tuned on its unimodal label
  (its metrics are against that label: ``val/mae`` of a T step is the MAE against ``label_T``);
* ``step2``: the extractors are frozen (eval mode, no gradients) and only the fusion network and the
  M head train. With ``step2_inputs="features"`` (the default) the model holds no extractors at all:
  it reads the batches of :class:`~msa_lightning.papers.twostep.data.ExtractedFeaturesDataModule`, which ran
  the step-1 extractors once per clip and stored their outputs (``text_feats``, ``audio``, ``vision``
  with lengths, and the global vectors in ``extras``), so an epoch costs what the fusion network costs.
  With ``step2_inputs="raw"`` the frozen extractors live in the model (weights from
  ``step1_checkpoints``) and run under ``torch.no_grad`` on raw batches: one module from clips to scores.

``freeze_extractors`` keeps the pretrained extractors frozen in any regime: ``step1`` with it is Table 3's
frozen-extractor (snowflake) rows, where only the unimodal head learns.

``step1`` on a modality of ``file_features`` is Table 3's hand-crafted rows (openSMILE [A], OpenFace [V]): only the
unimodal head learns, on the mean of the file's frames (nothing to fine-tune; the paper does not describe the
network of those rows).

``file_features`` (``"AV"``) is Table 1's baseline half (BERT[T], hand-crafted[A], hand-crafted[V]): the
acoustic and visual inputs are the standard feature file's precomputed sequences (``audio``/``vision``
with lengths, read through :class:`~msa_lightning.data.datamodule.MSADataModule`; global vector = mean over
valid frames) instead of HuBERT and Video Swin, while text still runs BERT on the file's (re-tokenised)
text. Same heads, fusion and Eq. 2, so the two halves of Table 1 differ only in the A/V extractors. Step 1
then fine-tunes only BERT; step 2 uses ``step2_inputs=raw`` (the frozen step-1 BERT in the model).

Optimisation (4.2): Adam; ``extractor_lr`` (1e-5) for the pretrained extractors (the group
``extractors``) and ``lr`` (1e-4) for everything else.

TFN (3.3) is parameter-free by default, as in the paper; with the proposed extractors its product does not fit
in memory, so the shipped Table 1 configs set a learned projection (``tfn_dim``). MulT's dropouts follow its
reference implementation (``mult_reference_dropouts``). Both are documented on
:class:`~msa_lightning.papers.twostep.config.TwoStepConfig`.

Weights: nothing pretrained is silently random. A Video Swin other than ``tiny-swin3d`` needs
``video_checkpoint`` (a folder of ``msa weights convert-swin3d``) unless ``video_random_init`` opts in (logged);
step 2 with the extractors in the model needs an entry per extractor in ``step1_checkpoints``: a step-1
checkpoint or ``pretrained`` (the pretrained extractor on purpose, Table 3's frozen rows + fusion).

Choices the paper does not state: the heads are two-layer MLPs (``head_hidden``, ReLU, dropout);
MulT's sizes are the component's defaults.
"""

from __future__ import annotations

import logging
from typing import Literal

import torch
import torch.nn.functional as F

from msa_lightning.batch import MSABatch
from msa_lightning.errors import ConfigError, DataError
from msa_lightning.output import MSAOutput
from msa_lightning.papers.twostep.config import TwoStepConfig
from msa_lightning.papers.twostep.net import EXTRACTOR, FEATURE_FIELDS, RAW_FIELDS, TwoStepNet
from msa_lightning.training.config import config_key as _key
from msa_lightning.training.module import MSARegressionModule, base_args, labels_of

log = logging.getLogger(__name__)


class TwoStepMSA(MSARegressionModule):
    """TwoStepMSA (module docstring: network, Eqs. 1-2, regimes).

    The network's arguments are the fields of :class:`~msa_lightning.papers.twostep.config.TwoStepConfig`
    (given flat: ``regime``, ``fusion``, ``modalities``, the extractors, heads, TFN and MulT sizes).

    Args:
        step1_checkpoints: ``{"text"|"audio"|"vision": checkpoint}`` for ``step2_inputs=raw`` (with
            ``features`` the DataModule takes them: ``data.init_args.step1_checkpoints``); a ``.ckpt``
            file or a run folder (its best checkpoint, as ``msa test``/``msa export`` resolve it), or
            ``pretrained``: that extractor as pretrained, not fine-tuned, on purpose. Every extractor of a
            raw step 2 needs an entry.
        alpha_M, alpha_T, alpha_A, alpha_V: the loss weights alpha_k of Eq. 2 (joint); 0 drops a task.
        extractor_lr: learning rate of the extractors (1e-5, Section 4.2); ``lr`` (1e-4) for the rest.
        Other optimisation arguments: :class:`~msa_lightning.training.module.MSARegressionModule`'s.
    """

    def __init__(
        self,
        step1_checkpoints: dict[str, str | None] | None = None,
        alpha_M: float = 1.0,
        alpha_T: float = 1.0,
        alpha_A: float = 1.0,
        alpha_V: float = 1.0,
        extractor_lr: float = 1e-5,
        lr: float = 1e-4,
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
        self.use_config(TwoStepConfig(**net))
        for name in ("alpha_M", "alpha_T", "alpha_A", "alpha_V"):
            if not float(self.hparams[name]) >= 0:
                raise ConfigError(f"{_key(name)}: expected a weight >= 0, found {self.hparams[name]!r}")
        unknown = set(step1_checkpoints or {}) - set(EXTRACTOR.values())
        if unknown:
            raise ConfigError(
                f"{_key('step1_checkpoints')}: unknown modalities {sorted(unknown)}; expected text, audio, vision"
            )
        if not extractor_lr > 0:
            raise ConfigError(f"{_key('extractor_lr')} must be a positive number, got {extractor_lr!r}")
        self.check_pretrained_weights()
        self.init_net()

    def check_pretrained_weights(self) -> None:
        """Before anything is built: a raw step 2 names each extractor's step-1 weights (or ``pretrained``),
        and a Video Swin that starts from its pretrained weights has them (or random init is opted in)."""
        from msa_lightning.nn.video_swin import check_video_weights
        from msa_lightning.papers.twostep.data import PRETRAINED, step1_sources

        c = self.config
        if c.reads_features:
            return
        extractors = [m for m in c.used_modalities if m not in c.file_modalities]
        sources = {}
        if c.regime == "step2":
            given = self.hparams.step1_checkpoints
            sources = step1_sources(given, [EXTRACTOR[m] for m in extractors], _key("step1_checkpoints"))
        if "V" in extractors and sources.get("vision", PRETRAINED) == PRETRAINED:
            check_video_weights(c.video_arch, c.video_checkpoint, c.video_random_init, _key("video_checkpoint"), log)

    @classmethod
    def inference_overrides(cls, hparams: dict) -> dict:
        """Hyper-parameters that rebuild a saved model without reading weights that its checkpoint holds anyway
        (``msa infer``): the step-1 checkpoints of a raw step 2 and the Video Swin weights file (the state dict
        loaded after building replaces them, strictly). Only the pretrained configs remain needed (the text and
        audio models' folders or cached hub names) to build the architecture."""
        overrides = {}
        given = hparams.get("step1_checkpoints") or {}
        if given:
            from msa_lightning.papers.twostep.data import PRETRAINED

            overrides["step1_checkpoints"] = {name: PRETRAINED for name in given}
        if hparams.get("video_checkpoint") and hparams.get("video_arch", "swin3d_t") != "auto":
            overrides.update(video_checkpoint=None, video_random_init=True)
        return overrides

    # ------------------------------------------------------------------ what the regime needs
    @property
    def regime(self) -> str:
        return self.config.regime

    @property
    def modalities(self) -> tuple[str, ...]:
        """The modalities the network reads (in step 1 the one it fine-tunes)."""
        return self.config.used_modalities

    @property
    def reads_features(self) -> bool:
        """Step 2 on stored extractor outputs (no extractor in the model)."""
        return self.config.reads_features

    @property
    def net_requires(self) -> tuple[str, ...]:
        return tuple(f"{EXTRACTOR[m]}_dim" for m in self.modalities if self.config.reads_as_features(m))

    @property
    def required_inputs(self) -> set[str]:
        reads = self.config.reads_as_features
        return set().union(*((FEATURE_FIELDS if reads(m) else RAW_FIELDS)[m] for m in self.modalities))

    def task_weights(self) -> dict[str, float]:
        """The tasks of the loss and their alpha_k (Eq. 2) in this regime."""
        hp = self.hparams
        if self.regime == "step1":
            return {self.config.step1_modality: 1.0}
        if self.regime == "joint":
            weights = {"M": hp.alpha_M, **{m: hp[f"alpha_{m}"] for m in self.modalities}}
            return {k: float(w) for k, w in weights.items() if w > 0}
        return {"M": 1.0}

    @property
    def target_label(self) -> str:
        """The label the stage's main prediction (``outputs.M``) is scored against."""
        return self.config.step1_modality if self.regime == "step1" else "M"

    # ------------------------------------------------------------------ the network
    def build_net(self) -> TwoStepNet:
        net = TwoStepNet(self.config)
        if self.regime == "step2":  # the frozen extractors in the model: weights from step 1
            from msa_lightning.papers.twostep.data import PRETRAINED, load_encoder_weights

            for modality in net.extractor_modalities:
                name = EXTRACTOR[modality]
                source = self.hparams.step1_checkpoints[name]  # every entry is there (check_pretrained_weights)
                if source == PRETRAINED:
                    log.info("TwoStepMSA step 2: the %s extractor runs as pretrained (%s)", name, PRETRAINED)
                else:
                    load_encoder_weights(getattr(net, name), source, _key(f"step1_checkpoints.{name}"))
        return net

    # ------------------------------------------------------------------ data checks
    def setup(self, stage: str) -> None:
        datamodule = self._datamodule()
        if datamodule is not None:
            self.check_extractor_names(datamodule)
        super().setup(stage)
        if datamodule is not None and stage in ("fit", "validate", "test"):
            self.check_labels(datamodule)

    def check_extractor_names(self, datamodule) -> None:
        """The data must come from the extractors the model names: BERT in the model reads the data's token
        ids (``data.init_args.tokenizer``); step 2 on stored outputs reads what the DataModule's extractors
        (``data.init_args.text_model`` ...) computed. A difference is one ConfigError naming both keys."""
        hp = self.hparams
        if self.reads_features:
            pairs = [
                (m, name)
                for m, name in (("T", "text_model"), ("A", "audio_model"), ("V", "video_arch"))
                if m in self.modalities
            ]
            for _modality, name in pairs:
                data_value = getattr(datamodule, name, None)
                if data_value is not None and str(data_value) != str(hp[name]):
                    raise ConfigError(
                        f"{_key(name)}={hp[name]!r} but step 2 reads the stored outputs of "
                        f"data.init_args.{name}={data_value!r}: set both to the same model (step 2's checkpoint "
                        f"records which extractors made its inputs)"
                    )
            return
        tokenizer = getattr(datamodule, "tokenizer_name", None)
        if "T" in self.modalities and tokenizer is not None and str(tokenizer) != str(hp.text_model):
            raise ConfigError(
                f"data.init_args.tokenizer={tokenizer!r} differs from {_key('text_model')}="
                f"{hp.text_model!r}: BERT would read another model's token ids; set both to the "
                f"same name or folder"
            )

    def check_labels(self, datamodule) -> None:
        """One error naming every label the regime trains on that the data lacks (MOSI has only M)."""
        needed = list(self.task_weights())
        get = getattr(datamodule, "train_labels", None)
        if not callable(get):
            return
        missing = []
        for key in needed:
            try:
                get(key)
            except (DataError, KeyError):
                missing.append(key)
        if missing:
            where = (
                getattr(datamodule, "label_file", None)
                or getattr(datamodule, "feature_file", None)
                or type(datamodule).__name__
            )
            raise DataError(
                f"{_key('regime')}={self.regime!r} trains on the labels {needed}, but {where} has no "
                f"{', '.join(missing)} labels (split 'train'; unimodal labels are the columns label_T, label_A, "
                f"label_V, which MOSI does not have): use regime 'single' (or 'step2' on extractors fine-tuned "
                f"elsewhere) on this data"
            )

    # ------------------------------------------------------------------ losses and scores
    def compute_loss(self, outputs: MSAOutput, batch: MSABatch) -> tuple[torch.Tensor, dict]:
        """Eq. 2: ``sum_k alpha_k L_k`` with the L1 losses of Eq. 1, logged as ``loss_<k>``."""
        predictions = {**outputs.unimodal, "M": outputs.M} if self.regime != "step1" else outputs.unimodal
        weights = self.task_weights()
        parts = {f"loss_{k}": F.l1_loss(predictions[k], labels_of(batch, k)) for k in weights}
        loss = sum(w * parts[f"loss_{k}"] for k, w in weights.items())
        return loss, parts

    def _eval_step(self, batch: MSABatch, metrics, prefix: str) -> None:
        outputs = self(batch)
        target = self.target_label
        if target not in batch.labels:  # unlabeled data: nothing to score
            return
        loss, parts = self.compute_loss(outputs, batch)
        for name, value in {"loss": loss, **parts}.items():
            self._mean(f"{prefix}/{name}").update(value.detach(), len(batch))
        metrics.update(outputs.M.detach(), batch.labels[target])

    # ------------------------------------------------------------------ optimisation
    def group_specs_with_encoder(self) -> list[dict]:
        """``param_groups`` plus ``extractors`` (lr ``extractor_lr``, Section 4.2): every trainable
        extractor that no given group names."""
        specs = list(self.group_specs)
        named = {p for s in specs for p in s["prefixes"]}
        prefixes = []
        for modality in getattr(self.net, "extractor_modalities", ()):
            prefix = f"net.{EXTRACTOR[modality]}"
            trainable = any(p.requires_grad for p in self.get_submodule(prefix).parameters())
            if trainable and prefix not in named:
                prefixes.append(prefix)
        if prefixes and not any(s["name"] == "extractors" for s in specs):
            specs.append(
                {
                    "name": "extractors",
                    "prefixes": prefixes,
                    "lr": self.hparams.extractor_lr,
                    "weight_decay": self.weight_decay,
                }
            )
        return specs

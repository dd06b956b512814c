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

TFN (3.3): the paper's TFN adds no trainable parameters, the outer product of the ``[g; 1]`` global vectors
(``tfn_dim=None``, the default here). With the proposed extractors that product has 769^3 ~ 4.5e8 entries per
sample (and the M head as many weights per unit), which no GPU holds, so the shipped Table 1 configs switch on
``tfn_dim: 32``, a learned projection (ReLU) of each global vector before the product; the paper does not say
how its TFN rows were made to fit. A parameter-free product above :data:`MAX_TFN_ENTRIES` entries is one
ConfigError that says so.

MulT's dropouts (``mult_reference_dropouts``, default on) are those of the reference implementation (Tsai et
al.): the memory transformers all use the text attention dropout, and the text sequence gets the embedding
dropout before its projection; off, each memory transformer uses its target modality's attention dropout and
the text none (this suite's earlier rule).

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
from torch import nn

from msa_lightning.batch import MSABatch
from msa_lightning.errors import ConfigError, DataError
from msa_lightning.output import MSAOutput
from msa_lightning.papers.twostep.net import (
    EXTRACTOR,
    FEATURE_FIELDS,
    FUSIONS,
    MODALITIES,
    RAW_FIELDS,
    TwoStepNet,
    _key,
    parse_modalities,
)
from msa_lightning.training.module import MSARegressionModule, labels_of

log = logging.getLogger(__name__)

REGIMES = ("single", "joint", "step1", "step2")

#: the largest parameter-free TFN product (entries per sample) accepted; beyond it the M head alone would
#: need ``head_hidden`` times as many weights
MAX_TFN_ENTRIES = 1 << 22


class TwoStepMSA(MSARegressionModule):
    """TwoStepMSA (module docstring: network, Eqs. 1-2, regimes).

    Args:
        regime: ``single``, ``joint``, ``step1`` or ``step2`` (Table 1's rows).
        fusion: ``sf``, ``tfn`` or ``mult`` (Section 3.3; unused in step 1).
        modalities: the modalities fused, e.g. ``TAV``, ``AV``, ``T`` (Table 4).
        step1_modality: the extractor step 1 fine-tunes on its unimodal label (``T``, ``A`` or ``V``).
        step2_inputs: ``features`` (stored extractor outputs of ExtractedFeaturesDataModule) or ``raw``
            (frozen extractors in the model, loaded from ``step1_checkpoints``).
        step1_checkpoints: ``{"text"|"audio"|"vision": checkpoint}`` for ``step2_inputs=raw`` (with
            ``features`` the DataModule takes them: ``data.init_args.step1_checkpoints``); a ``.ckpt``
            file or a run folder (its best checkpoint, as ``msa test``/``msa export`` resolve it), or
            ``pretrained``: that extractor as pretrained, not fine-tuned, on purpose. Every extractor of a
            raw step 2 needs an entry.
        file_features: modalities read as the feature file's precomputed (hand-crafted) features instead
            of an extractor: ``"AV"`` gives Table 1's baseline rows (None: none).
        text_model, audio_model: names or folders (``tiny-bert``, ``tiny-hubert`` in tests).
        video_arch, video_checkpoint: Video Swin architecture (``swin3d_t``; ``tiny-swin3d``) and weights (a
            folder written by ``msa weights convert-swin3d``, or a ``.pth``).
        video_random_init: allow a pretrained Video Swin architecture without ``video_checkpoint`` (random
            weights, logged); off, that is an error.
        video_gradient_checkpointing: recompute Swin activations in the backward pass (less memory).
        freeze_extractors: keep the pretrained extractors frozen in every regime (Table 3's snowflake
            rows: ``step1`` with a frozen extractor trains only its head); step 2 always freezes them.
        alpha_M, alpha_T, alpha_A, alpha_V: the loss weights alpha_k of Eq. 2 (joint); 0 drops a task.
        head_hidden, head_dropout: the fully connected heads.
        tfn_dim: None (default): the paper's parameter-free TFN on the raw global vectors; a number: a
            learned per-modality projection to that width first (the shipped configs: 32).
        mult_dim, mult_heads, mult_layers, mult_positional_embedding: MulT's width, heads, depth and
            positional embeddings (on: the original MulT; off: the field's toolkit).
        mult_reference_dropouts: MulT's dropouts as the reference implementation (module docstring).
        text_dim, audio_dim, vision_dim: step-2 feature widths (None: from the data).
        extractor_lr: learning rate of the extractors (1e-5, Section 4.2); ``lr`` (1e-4) for the rest.
    """

    def __init__(
        self,
        regime: Literal["single", "joint", "step1", "step2"] = "joint",
        fusion: Literal["sf", "tfn", "mult"] = "sf",
        modalities: str = "TAV",
        step1_modality: Literal["T", "A", "V"] | None = None,
        step2_inputs: Literal["features", "raw"] = "features",
        step1_checkpoints: dict[str, str | None] | None = None,
        text_model: str = "bert-base-chinese",
        audio_model: str = "facebook/hubert-base-ls960",
        video_arch: str = "swin3d_t",
        video_checkpoint: str | None = None,
        video_random_init: bool = False,
        video_gradient_checkpointing: bool = False,
        freeze_extractors: bool = False,
        alpha_M: float = 1.0,
        alpha_T: float = 1.0,
        alpha_A: float = 1.0,
        alpha_V: float = 1.0,
        head_hidden: int = 128,
        head_dropout: float = 0.1,
        tfn_dim: int | None = None,
        mult_dim: int = 30,
        mult_heads: int = 5,
        mult_layers: int = 5,
        mult_positional_embedding: bool = True,
        mult_reference_dropouts: bool = True,
        file_features: str | None = None,
        text_dim: int | None = None,
        audio_dim: int | None = None,
        vision_dim: int | None = None,
        extractor_lr: float = 1e-5,
        lr: float = 1e-4,
        **kwargs,
    ) -> None:
        super().__init__(lr=lr, **kwargs)
        self.save_hyperparameters()
        if regime not in REGIMES:
            raise ConfigError(f"{_key('regime')}: expected one of {list(REGIMES)}, found {regime!r}")
        if fusion not in FUSIONS:
            raise ConfigError(f"{_key('fusion')}: expected one of {list(FUSIONS)}, found {fusion!r}")
        if step2_inputs not in ("features", "raw"):
            raise ConfigError(f"{_key('step2_inputs')}: expected 'features' or 'raw', found {step2_inputs!r}")
        self.modalities = parse_modalities(modalities)
        self.file_modalities = parse_modalities(file_features) if file_features else ()
        if set(self.file_modalities) - {"A", "V"}:
            raise ConfigError(
                f"{_key('file_features')}: expected a subset of A, V (the hand-crafted acoustic and "
                f"visual features of a feature file; text always runs BERT), found {file_features!r}"
            )
        if self.file_modalities and regime == "step2" and step2_inputs == "features":
            raise ConfigError(
                f"{_key('file_features')}={file_features!r} with {_key('regime')}=step2 needs "
                f"{_key('step2_inputs')}=raw (the frozen step-1 BERT in the model, acoustic and "
                f"visual features from the file); step2_inputs=features reads extractor outputs only"
            )
        if regime == "step1":
            if step1_modality not in MODALITIES:
                raise ConfigError(
                    f"{_key('step1_modality')}: regime 'step1' fine-tunes one extractor on its "
                    f"unimodal label; expected T, A or V, found {step1_modality!r}"
                )
            self.modalities = (step1_modality,)
        if fusion == "mult" and regime != "step1" and len(self.modalities) < 2:
            raise ConfigError(
                f"{_key('fusion')}=mult needs at least two modalities (cross-modal attention), "
                f"{_key('modalities')} is {modalities!r}; use sf for one modality"
            )
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
        self.regime = regime
        self.check_pretrained_weights()
        self.init_net()

    def check_pretrained_weights(self) -> None:
        """Before anything is built: a raw step 2 names each extractor's step-1 weights (or ``pretrained``),
        and a Video Swin that starts from its pretrained weights has them (or random init is opted in)."""
        from msa_lightning.nn.video_swin import check_video_weights
        from msa_lightning.papers.twostep.data import PRETRAINED, step1_sources

        hp = self.hparams
        if self.reads_features:
            return
        extractors = [m for m in self.modalities if m not in self.file_modalities]
        sources = {}
        if self.regime == "step2":
            sources = step1_sources(hp.step1_checkpoints, [EXTRACTOR[m] for m in extractors], _key("step1_checkpoints"))
        if "V" in extractors and sources.get("vision", PRETRAINED) == PRETRAINED:
            check_video_weights(hp.video_arch, hp.video_checkpoint, hp.video_random_init, _key("video_checkpoint"), log)

    # ------------------------------------------------------------------ what the regime needs
    @property
    def reads_features(self) -> bool:
        """Step 2 on stored extractor outputs (no extractor in the model)."""
        return self.regime == "step2" and self.hparams.step2_inputs == "features"

    def reads_as_features(self, modality: str) -> bool:
        """``modality`` comes as precomputed features (step-2 extractor outputs or the feature file's)."""
        return self.reads_features or modality in self.file_modalities

    @property
    def net_requires(self) -> tuple[str, ...]:
        return tuple(
            f"{EXTRACTOR[m]}_dim" if m != "T" else "text_dim" for m in self.modalities if self.reads_as_features(m)
        )

    @property
    def required_inputs(self) -> set[str]:
        return set().union(*((FEATURE_FIELDS if self.reads_as_features(m) else RAW_FIELDS)[m] for m in self.modalities))

    def task_weights(self) -> dict[str, float]:
        """The tasks of the loss and their alpha_k (Eq. 2) in this regime."""
        hp = self.hparams
        if self.regime == "step1":
            return {hp.step1_modality: 1.0}
        if self.regime == "joint":
            weights = {"M": hp.alpha_M, **{m: hp[f"alpha_{m}"] for m in self.modalities}}
            return {k: float(w) for k, w in weights.items() if w > 0}
        return {"M": 1.0}

    @property
    def target_label(self) -> str:
        """The label the stage's main prediction (``outputs.M``) is scored against."""
        return self.hparams.step1_modality if self.regime == "step1" else "M"

    # ------------------------------------------------------------------ the network
    def build_net(self) -> TwoStepNet:
        from msa_lightning.nn.audio_encoder import AudioEncoder
        from msa_lightning.nn.text_encoder import TextEncoder
        from msa_lightning.nn.video_swin import VideoSwinEncoder

        hp = self.hparams
        frozen = self.regime == "step2" or bool(hp.freeze_extractors)
        extractors: dict[str, nn.Module] = {}
        if not self.reads_features:
            for m in self.modalities:
                if m in self.file_modalities:
                    continue
                if m == "T":
                    extractors[m] = TextEncoder(hp.text_model, finetune=not frozen)
                elif m == "A":
                    extractors[m] = AudioEncoder(hp.audio_model, finetune=not frozen)
                else:
                    extractors[m] = VideoSwinEncoder(
                        hp.video_arch,
                        hp.video_checkpoint,
                        finetune=not frozen,
                        gradient_checkpointing=hp.video_gradient_checkpointing,
                    )
            if self.regime == "step2":
                from msa_lightning.papers.twostep.data import PRETRAINED, load_encoder_weights

                for modality, encoder in extractors.items():
                    name = EXTRACTOR[modality]
                    source = hp.step1_checkpoints[name]  # every entry is there (check_pretrained_weights)
                    if source == PRETRAINED:
                        log.info("TwoStepMSA step 2: the %s extractor runs as pretrained (%s)", name, PRETRAINED)
                    else:
                        load_encoder_weights(encoder, source, _key(f"step1_checkpoints.{name}"))
        dims = {m: e.hidden_size for m, e in extractors.items()}
        dims.update(
            {
                m: int(hp[f"{EXTRACTOR[m]}_dim" if m != "T" else "text_dim"])
                for m in self.modalities
                if self.reads_as_features(m)
            }
        )
        heads = {"joint": self.modalities, "step1": self.modalities}.get(self.regime, ())
        mult_args = dict(
            dim=hp.mult_dim,
            num_heads=hp.mult_heads,
            layers=hp.mult_layers,
            positional_embedding=hp.mult_positional_embedding,
            **({} if hp.mult_reference_dropouts else {"memory_attn_dropout": "target", "text_dropout": 0.0}),
        )
        if hp.fusion == "tfn" and hp.tfn_dim is None and self.regime != "step1":
            entries = 1
            for m in self.modalities:
                entries *= dims[m] + 1
            if entries > MAX_TFN_ENTRIES:
                raise ConfigError(
                    f"{_key('tfn_dim')}=null (the paper's parameter-free TFN) makes {entries:,} entries per sample "
                    f"from global vectors of widths {[dims[m] for m in self.modalities]}, more than "
                    f"{MAX_TFN_ENTRIES:,}: set {_key('tfn_dim')} (e.g. 32, a learned projection per modality)"
                )
        return TwoStepNet(
            self.modalities,
            extractors,
            frozen,
            dims,
            tuple(heads),
            None if self.regime == "step1" else hp.fusion,
            hp.head_hidden,
            hp.head_dropout,
            hp.tfn_dim,
            mult_args,
        )

    # ------------------------------------------------------------------ data checks
    def setup(self, stage: str) -> None:
        datamodule = self._datamodule()
        get_facts = getattr(datamodule, "data_facts", None)
        if self.reads_features and callable(get_facts):
            found = get_facts().get("text_dim")
            if found is not None and self.hparams.text_dim is None:
                self.hparams.text_dim = int(found)
            elif found is not None and int(found) != int(self.hparams.text_dim):
                raise ConfigError(
                    f"{_key('text_dim')}={self.hparams.text_dim} does not match the data: "
                    f"{type(datamodule).__name__} has text_dim={found}"
                )
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

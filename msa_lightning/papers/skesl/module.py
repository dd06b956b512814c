"""SKESL: sentiment knowledge enhanced self-supervised learning (Qian et al., Findings of ACL 2023).

Pretraining (:class:`SKESLPretrain`) on unlabeled clips whose most sentiment-laden word was masked
(:mod:`msa_lightning.papers.skesl.masking`, Section 3.2), then fine-tuning (:class:`SKESLModule`) on
labeled MOSI/MOSEI, starting from the pretrained encoder and blocks (Section 3.6).

The network (Section 3, Figure 2):

* BERT encodes the corrupted sentence: ``X^T = BERT(S')`` (Eq. 1);
* ``L`` non-verbal injection blocks (:class:`NonverbalInjectionBlock`, Eqs. 2-7) refine the text
  sequence with the *original* audio and visual features ``X_0^A``, ``X_0^V`` (low-level frames,
  re-read by every block);
* pretraining: a two-layer network (hidden 256) predicts the masked word's intensity from the last
  block's output at the masked position (Eq. 8), with the L1 loss against the lexicon score (Eq. 9).
  A word can span several pieces and the chosen word is masked wherever it occurs: the prediction
  reads the mean of the outputs at all masked pieces (one piece: that piece, as in the authors' code);
* fine-tuning: an output layer of the same shape on ``X_L`` mean-pooled over the real tokens
  (padding excluded; the authors' released code averages over every position, padding included).

Where the authors' released code differs from the paper, the paper is the default:

* ``share_blocks``: the released code builds one block and applies it ``L`` times (shared weights);
  the paper's blocks each have their own weights (default ``False``);
* the released block projects queries/keys/values to 256 and back, and feeds ``X_{l-1}`` (not its
  layer norm) into Eq. 6 and a single linear layer as the FFN; here Eqs. 2-7 are implemented as
  written (``d_T``-sized projections, ``LN(X_{l-1})`` in Eq. 6, a two-layer FFN with ReLU as in the
  vanilla Transformer the paper cites for Eq. 7).

Ablations (Table 8): *w/o SKESL* is :class:`SKESLModule` without ``pretrained`` (BERT as released,
new blocks); *w/o AV* is ``use_nonverbal: false`` (BERT and the output layer only, no blocks, no
audio or visual input).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F

from msa_lightning.batch import MSABatch
from msa_lightning.errors import ConfigError, DataError
from msa_lightning.output import MSAOutput
from msa_lightning.papers.skesl.config import SKESLConfig
from msa_lightning.papers.skesl.net import LABEL_KEY, SKESLEncoder, SKESLNet, SKESLPretrainNet
from msa_lightning.training.module import MSARegressionModule, base_args

TEXT_INPUTS = frozenset({"text_ids", "text_mask", "text_segment"})
NONVERBAL_INPUTS = frozenset({"audio", "audio_lengths", "vision", "vision_lengths"})
#: hparams that shape the pretrained encoder and blocks (they must agree between the two stages)
#: (the text model is not compared by name: a hub name and a local copy are the same model; shapes decide)
ARCH_ARGS = ("use_nonverbal", "num_blocks", "share_blocks", "ffn_dim", "audio_dim", "vision_dim")


class _SKESLBase(MSARegressionModule):
    """Both stages: :class:`MSARegressionModule`'s arguments with its defaults, then the network's
    (``**net``: the fields of :class:`~msa_lightning.papers.skesl.config.SKESLConfig`, given flat)."""

    encoder_prefix = "net.encoder.text_encoder"

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
        **net,
    ) -> None:
        super().__init__(**base_args(locals()))
        self.save_hyperparameters()
        self.use_config(SKESLConfig(**net))
        self.init_net()

    @property
    def net_requires(self) -> tuple[str, ...]:
        return ("audio_dim", "vision_dim") if self.config.use_nonverbal else ()

    @property
    def required_inputs(self) -> set[str]:
        return set(TEXT_INPUTS | (NONVERBAL_INPUTS if self.config.use_nonverbal else set()))


class SKESLPretrain(_SKESLBase):
    """SKESL pretraining: predict the masked word's sentiment intensity (Eqs. 8-9, L1 loss).

    Reads unlabeled batches: ``batch.labels`` may be empty; the targets come from the masking, in
    ``batch.extras["skesl_target"]`` (masked pieces) and ``batch.extras["skesl_label"]`` (scaled
    intensity), as :class:`~msa_lightning.papers.skesl.data.SKESLMaskedDataModule` serves them.
    Validation logs the same L1 loss (``val/loss``) on the held-out clips.

    The network's arguments are the fields of :class:`~msa_lightning.papers.skesl.config.SKESLConfig`
    (given flat). Optimisation: :class:`~msa_lightning.training.module.MSARegressionModule`'s, with its
    defaults (Table 9's Adam, ``encoder_lr`` 5e-6 for BERT and ``lr`` 1e-4 are set by the configs).
    """

    def build_net(self) -> SKESLPretrainNet:
        return SKESLPretrainNet(self.config)

    def compute_loss(self, outputs: MSAOutput, batch: MSABatch) -> tuple[torch.Tensor, dict]:
        label = batch.extras.get(LABEL_KEY)
        if label is None:
            raise DataError(
                f"SKESLPretrain needs batch.extras[{LABEL_KEY!r}] (the masked words' intensities): "
                f"use msa_lightning.papers.skesl.data.SKESLMaskedDataModule"
            )
        return F.l1_loss(outputs.M, label.to(outputs.M.dtype)), {}

    def _eval_step(self, batch: MSABatch, metrics, prefix: str) -> None:
        """The pretraining loss on held-out clips (there are no sentiment labels to score)."""
        loss, _ = self.compute_loss(self(batch), batch)
        self._mean(f"{prefix}/loss").update(loss.detach(), len(batch))

    def predict_step(self, batch: MSABatch, batch_idx: int, dataloader_idx: int = 0) -> dict:
        """``{"ids", "score"}`` (predicted intensity of the masked word) and ``"label"`` (its lexicon score)."""
        outputs = self(batch)
        result = {"ids": list(batch.ids), "score": outputs.M.detach().float().cpu()}
        if LABEL_KEY in batch.extras:
            result["label"] = batch.extras[LABEL_KEY].detach().float().cpu()
        return result


class SKESLModule(_SKESLBase):
    """SKESL fine-tuning on labeled data (Section 3.6): the pretrained encoder and blocks, and an
    output layer (two layers, hidden 256) on ``X_L`` mean-pooled over the real tokens; L1 on ``M``.

    Args:
        pretrained: a :class:`SKESLPretrain` checkpoint (``.ckpt``) whose encoder (BERT and blocks)
            initialises this one; ``None`` = BERT as released and new blocks (Table 8, w/o SKESL).
            The intensity predictor of pretraining is not carried over. Its architecture arguments
            (``num_blocks``, ``share_blocks``, ``ffn_dim``, ``use_nonverbal``, and
            ``audio_dim``/``vision_dim``: the fine-tuning features must have the pretraining sizes)
            must match this module's; any mismatch of names or shapes is one ConfigError. The file
            is read whenever the network is built, so keep it, or pass ``pretrained=None`` to
            ``load_from_checkpoint`` of a fine-tuned model.
        Other args: as :class:`SKESLPretrain`.
    """

    def __init__(self, pretrained: str | None = None, **kwargs) -> None:
        super().__init__(**kwargs)  # records pretrained in hparams too (build_net reads it there)

    def build_net(self) -> SKESLNet:
        net = SKESLNet(self.config)
        if self.hparams.pretrained:
            load_pretrained_encoder(net.encoder, self.hparams.pretrained, dict(self.hparams))
        return net


def load_pretrained_encoder(encoder: SKESLEncoder, checkpoint: str | Path, hparams: dict | None = None) -> None:
    """Copy the encoder (BERT and blocks) of a :class:`SKESLPretrain` checkpoint into ``encoder``.

    Raises:
        ConfigError: the file is missing or not a SKESL pretraining checkpoint, an architecture
            argument differs (with ``hparams``), or parameter names/shapes do not match, naming each.
    """
    key = "model.init_args.pretrained"
    path = Path(checkpoint).expanduser()
    if not path.is_file():
        raise ConfigError(f"{key}: pretraining checkpoint {path} not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # not a torch file: many error types
        raise ConfigError(f"{key}: {path} is not a readable checkpoint ({type(err).__name__}: {err})") from None
    state = ckpt.get("state_dict") if isinstance(ckpt, dict) else None
    prefix = "net.encoder."
    if not state or not any(k.startswith(prefix) for k in state):
        raise ConfigError(
            f"{key}: {path} holds no SKESL encoder (no '{prefix}*' weights; expected a "
            f"checkpoint written while training SKESLPretrain)"
        )
    theirs = ckpt.get("hyper_parameters", {})
    if hparams is not None:
        names = ARCH_ARGS if hparams.get("use_nonverbal", True) else ("use_nonverbal",)
        differ = [
            f"model.init_args.{name}: checkpoint {theirs[name]!r}, here {hparams.get(name)!r}"
            for name in names
            if name in theirs and theirs[name] != hparams.get(name)
        ]
        if differ:
            sizes = any(n in names and n in theirs and theirs[n] != hparams.get(n) for n in ("audio_dim", "vision_dim"))
            hint = (
                "; the fine-tuning features must have the pretraining's sizes: extract them as the pretraining's "
                "(configs/skesl/README.md, 'Fine-tuning on features extracted like the pretraining')"
                if sizes
                else ""
            )
            raise ConfigError(
                f"{key}: {path} was pretrained with other architecture arguments ({'; '.join(differ)}){hint}"
            )
    weights = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    ours = encoder.state_dict()
    missing = sorted(set(ours) - set(weights))
    unexpected = sorted(set(weights) - set(ours))
    shapes = [
        f"{k}: checkpoint {tuple(weights[k].shape)}, here {tuple(ours[k].shape)}"
        for k in sorted(set(ours) & set(weights))
        if weights[k].shape != ours[k].shape
    ]
    if missing or unexpected or shapes:
        parts = []
        if shapes:
            parts.append(f"{len(shapes)} shape mismatch(es) ({'; '.join(shapes[:3])})")
        if missing:
            parts.append(f"{len(missing)} weight(s) missing from the checkpoint ({', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected weight(s) ({', '.join(unexpected[:3])})")
        raise ConfigError(f"{key}: {path} does not fit this encoder: {'; '.join(parts)}")
    encoder.load_state_dict(weights)

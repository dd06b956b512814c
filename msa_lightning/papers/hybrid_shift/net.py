"""Hybrid-modal attention of Lin & Hu, "Dynamically Shifting Multimodal Representations via
Hybrid-Modal Attention for Multimodal Sentiment Analysis" (IEEE TMM 2024), Section III.

Pieces (equation numbers are the paper's):

* :class:`MultimodalShiftingGate` (MSG, Eqs. 4-8): a modality's states are shifted by a gated mix of
  its partner modalities, scaled per token by ``eta = min(||F||_2 / (||h_s||_2 + 1e-6) * mu, 1)``.
* :class:`MaskedBimodalAdjustment` (MBA, Eqs. 9-17): text attends over itself with weights built from
  the text and the partner modality's self-similarity matrices, padding masked out.
* :func:`shifting_huber_loss` (Eq. 19): Huber loss of the shift vectors ``h_s`` towards zero.
* :class:`HybridShiftNet`: the whole network (Fig. 2) with the paper's ablation switches.

Data layout: the model works on *word-aligned* sequences (the ``aligned_50.pkl`` files): one acoustic
and one visual frame per text position, so every stream is ``[B, L, *]`` with one mask. How the
frames are laid on the tokens is ``nonverbal_alignment``:

* ``"tokens"`` (default): frame ``j`` belongs to text position ``j`` as stored (the field's aligned
  files, whose ``text_bert`` ids and frames share the length 50). Frames at padded text positions are
  zeroed.
* ``"words"`` — the MAG-BERT/MAG-XLNet convention: frame ``k`` belongs to the ``k``-th word; the
  frames are placed after the leading special token (BERT ``[CLS] w1 .. wn [SEP]``) or before the
  trailing ones (XLNet ``w1 .. wn <sep> <cls>``, padded on the left), and the special-token and
  padding positions get zero frames; ``frame_offset`` skips leading frames of the file (1 when its
  frames were laid on BERT positions with ``[CLS]`` first, e.g. to feed them to a re-tokenised,
  left-padded XLNet input). Word pieces are not repeated (the batch has no word ids), so with a
  sub-word tokenizer the alignment is approximate.

The acoustic/visual RNNs (Eqs. 1-2) run over the valid text positions only, whichever side the text is
padded on (rows are rotated so that valid steps come first, packed, and rotated back); text masks
must be one contiguous run of ones, which every tokenizer produces.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

from msa_lightning.batch import MODALITIES, MSABatch
from msa_lightning.nn.masking import first_valid, gather_positions, lengths_to_mask
from msa_lightning.nn.pretrained import TINY_MODELS, freeze, load_model
from msa_lightning.nn.rnn import SequenceEncoder
from msa_lightning.nn.split_transformer import SplitTransformer
from msa_lightning.output import MSAOutput
from msa_lightning.papers.hybrid_shift.config import HybridShiftConfig

log = logging.getLogger(__name__)

TEXT, AUDIO, VISION = MODALITIES
#: paper symbol of each stream: t, a, v
SYMBOL = {TEXT: "t", AUDIO: "a", VISION: "v"}


# ---------------------------------------------------------------------------------------------- MSG
class MultimodalShiftingGate(nn.Module):
    """MSG (Eqs. 4-8): shift ``x [B, L, dim]`` by its partner modalities.

    For each partner ``p`` (Eqs. 4-5) ``g_p = ReLU(W_gp [x; p] + b_gp)`` (``b_gp`` a scalar, as in the
    paper), and (Eq. 6) ``h_s = sum_p g_p * (W_p p) + b_h``. The output (Eqs. 7-8) is
    ``x + eta * h_s`` with, per token, ``eta = min(||x||_2 / (||h_s||_2 + eps) * mu, 1)`` and ``mu`` a
    learnable scalar initialised to ``mu_init``. So ``||eta h_s|| <= mu ||x||``: the shift can never
    outgrow the representation by more than ``mu``.

    MSG-T has partners audio/vision (at the syntactic text layer); MSG-A has text (an MBA output) and
    vision; MSG-V has text and audio. A partner that is absent (modality ablation) simply has no gate.

    Args:
        dim: size of the shifted representation.
        partner_dims: ``{name: size}`` of the partners, in a fixed order.
        mu_init: initial value of ``mu`` (the paper's threshold hyper-parameter).
        eps: the ``xi = 1e-6`` of Eq. 8.
        layer_norm: apply LayerNorm + dropout to the output as MAG-BERT does (not in Eq. 7; off by default).
        dropout: dropout after the LayerNorm (only with ``layer_norm``).
    """

    def __init__(
        self,
        dim: int,
        partner_dims: dict[str, int],
        mu_init: float = 0.5,
        eps: float = 1e-6,
        layer_norm: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if not partner_dims:
            raise ValueError("MultimodalShiftingGate needs at least one partner modality")
        self.dim, self.partners, self.eps = dim, tuple(partner_dims), eps
        self.gate = nn.ModuleDict({p: nn.Linear(dim + d, dim, bias=False) for p, d in partner_dims.items()})
        self.gate_bias = nn.ParameterDict({p: nn.Parameter(torch.zeros(())) for p in partner_dims})
        self.proj = nn.ModuleDict({p: nn.Linear(d, dim, bias=False) for p, d in partner_dims.items()})
        self.shift_bias = nn.Parameter(torch.zeros(dim))  # b_h
        self.mu = nn.Parameter(torch.tensor(float(mu_init)))
        self.norm = nn.Sequential(nn.LayerNorm(dim), nn.Dropout(dropout)) if layer_norm else None

    def shift(self, x: torch.Tensor, partners: dict[str, torch.Tensor]) -> torch.Tensor:
        """The shift vector ``h_s`` (Eqs. 4-6), ``[B, L, dim]``."""
        if set(partners) != set(self.partners):
            raise ValueError(f"MSG expects partners {sorted(self.partners)}, got {sorted(partners)}")
        h_s = self.shift_bias
        for name in self.partners:
            p = partners[name]
            if p.shape[:-1] != x.shape[:-1]:
                raise ValueError(
                    f"MSG partner {name!r} has shape {tuple(p.shape)}, the shifted stream "
                    f"{tuple(x.shape)}: streams must be aligned position by position"
                )
            g = F.relu(self.gate[name](torch.cat([x, p], dim=-1)) + self.gate_bias[name])
            h_s = h_s + g * self.proj[name](p)
        return h_s

    def scale(self, x: torch.Tensor, h_s: torch.Tensor) -> torch.Tensor:
        """``eta`` of Eq. 8 per token, ``[B, L, 1]``."""
        ratio = x.norm(p=2, dim=-1, keepdim=True) / (h_s.norm(p=2, dim=-1, keepdim=True) + self.eps)
        return (ratio * self.mu).clamp(max=1.0)

    def forward(
        self, x: torch.Tensor, partners: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns ``(x + eta * h_s, h_s, eta)`` (Eq. 7)."""
        h_s = self.shift(x, partners)
        eta = self.scale(x, h_s)
        out = x + eta * h_s
        if self.norm is not None:
            out = self.norm(out)
        return out, h_s, eta


# ---------------------------------------------------------------------------------------------- MBA
class MaskedBimodalAdjustment(nn.Module):
    """MBA (Eqs. 9-17): adjust text states ``M_t* [B, L, text_dim]`` with a partner stream ``[B, L, other_dim]``.

    1. (Eqs. 9-10) ``Conv1D`` of each stream to a common size ``d`` (``padding="same"``).
    2. (Eqs. 11-12) each token vector is divided by the square root of its L2 norm.
    3. (Eqs. 13-14) ``p_t = tanh(W_pt (M M^T) + b_pt)``, ``p_o = tanh(W_po (F F^T) + b_po)``: the
       ``L x L`` self-similarity matrices are multiplied on the left by learnt ``L x L`` matrices
       (``b`` scalars, as in the paper), hence ``max_len``.
    4. (Eq. 15) ``p_att = p_t * p_o``; (Eq. 16) ``x_att = softmax(p_t + p_att + mask)`` over keys with
       ``-inf`` on padded text positions; (Eq. 17) ``M_t* + x_att M_t*``.

    Padding never leaks into valid positions: both streams are zeroed at padded positions before
    the convolutions and after the normalisation, so their similarity rows/columns there are 0. A
    batch shorter than ``max_len`` uses the top-left block of ``W``, which equals zero-padding it.

    ``forward(text, other, mask [B, L] bool)`` returns ``(adjusted [B, L, text_dim], p_att, x_att)``.
    """

    def __init__(
        self,
        text_dim: int,
        other_dim: int,
        dim: int = 64,
        max_len: int = 50,
        text_kernel: int = 3,
        other_kernel: int = 3,
        eps: float = 1e-6,
    ) -> None:
        super().__init__()
        self.max_len, self.eps = max_len, eps
        self.conv_text = nn.Conv1d(text_dim, dim, text_kernel, padding="same")
        self.conv_other = nn.Conv1d(other_dim, dim, other_kernel, padding="same")
        self.w_text = nn.Linear(max_len, max_len, bias=False)  # W_pt (used as a left multiplication)
        self.w_other = nn.Linear(max_len, max_len, bias=False)  # W_pv / W_pa
        self.b_text = nn.Parameter(torch.zeros(()))
        self.b_other = nn.Parameter(torch.zeros(()))

    def _normalised(self, conv: nn.Conv1d, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        y = conv((x * keep).transpose(1, 2)).transpose(1, 2)  # Eqs. 9-10
        y = y / y.norm(p=2, dim=-1, keepdim=True).clamp(min=self.eps).sqrt()  # Eqs. 11-12
        return y * keep

    def attention(
        self, text: torch.Tensor, other: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(p_att, x_att)``, both ``[B, L, L]`` (queries x keys)."""
        length = text.shape[1]
        if length > self.max_len:
            raise ValueError(
                f"MBA was built for at most {self.max_len} positions (mba_max_len), got a batch of "
                f"length {length}; raise mba_max_len to the text length"
            )
        if other.shape[:2] != text.shape[:2]:
            raise ValueError(f"MBA streams must be aligned: text {tuple(text.shape)}, partner {tuple(other.shape)}")
        keep = mask[..., None].to(text.dtype)
        m = self._normalised(self.conv_text, text, keep)
        f = self._normalised(self.conv_other, other, keep)
        w_t = self.w_text.weight[:length, :length]
        w_o = self.w_other.weight[:length, :length]
        p_t = torch.tanh(torch.matmul(w_t, m @ m.transpose(1, 2)) + self.b_text)  # Eq. 13
        p_o = torch.tanh(torch.matmul(w_o, f @ f.transpose(1, 2)) + self.b_other)  # Eq. 14
        p_att = p_t * p_o  # Eq. 15
        scores = (p_t + p_att).masked_fill(~mask[:, None, :], float("-inf"))
        return p_att, torch.softmax(scores, dim=-1)  # Eq. 16

    def forward(self, text: torch.Tensor, other: torch.Tensor, mask: torch.Tensor):
        mask = mask.bool()
        p_att, x_att = self.attention(text, other, mask)
        return text + x_att @ text, p_att, x_att  # Eq. 17


# ---------------------------------------------------------------------------------------------- loss
def shifting_huber_loss(h_s: torch.Tensor, mask: torch.Tensor | None = None, delta: float = 1.0) -> torch.Tensor:
    """Shifting HuberLoss (Eq. 19): mean over valid positions and features of
    ``0.5 h^2`` where ``|h| <= delta`` and ``delta (|h| - delta / 2)`` elsewhere."""
    elementwise = F.huber_loss(h_s, torch.zeros_like(h_s), reduction="none", delta=delta)
    if mask is None:
        return elementwise.mean()
    keep = mask[..., None].to(elementwise.dtype)
    return (elementwise * keep).sum() / (keep.sum() * h_s.shape[-1]).clamp(min=1.0)


# ---------------------------------------------------------------------------------------------- helpers
def align_frames(
    frames: torch.Tensor,
    mask: torch.Tensor,
    mode: str = "tokens",
    leading: int = 1,
    trailing: int = 1,
    frame_offset: int = 0,
    name: str = "frames",
) -> torch.Tensor:
    """Lay per-token or per-word frames ``[B, T, D]`` on the text positions of ``mask [B, L]``
    (see the module docstring); positions without a frame are zero.

    ``leading``/``trailing``: special tokens before/after the words (BERT 1/1, XLNet 0/2);
    ``frame_offset`` (``words`` only): frames to skip before the first word's frame."""
    keep = mask[..., None].to(frames.dtype)
    length = mask.shape[1]
    if mode == "tokens":
        if frames.shape[1] != length:
            raise ValueError(
                f"{name} has {frames.shape[1]} frames per sample but the text has {length} positions: "
                f"HybridShift needs word-aligned features (the aligned_50.pkl file, data.aligned: true) "
                f"or nonverbal_alignment='words'; a modality left out by the datamodule must also be left "
                f"out of the model's `modalities`"
            )
        return frames * keep
    if mode != "words":
        raise ValueError(f"unknown nonverbal_alignment {mode!r}; expected 'tokens' or 'words'")
    pos = torch.arange(length, device=mask.device)[None, :]
    word = pos - first_valid(mask)[:, None] - leading
    n_words = mask.long().sum(1, keepdim=True) - leading - trailing
    frame = word + frame_offset
    valid = (word >= 0) & (word < n_words) & (frame < frames.shape[1])
    return gather_positions(frames, frame.clamp(0, frames.shape[1] - 1)) * valid[..., None].to(frames.dtype)


class AlignedRNN(nn.Module):
    """Eqs. 1-2: an RNN over the valid positions of ``[B, L, D]`` with a contiguous mask on either side;
    per-step states ``[B, L, H*dirs]``, zero at padded positions."""

    def __init__(self, in_dim: int, hidden: int, variant: str, num_layers: int, dropout: float) -> None:
        super().__init__()
        self.rnn = SequenceEncoder(in_dim, hidden, variant, num_layers=num_layers, dropout=dropout)
        self.out_dim = self.rnn.state_dim

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        length = x.shape[1]
        shift = first_valid(mask)[:, None]
        pos = torch.arange(length, device=x.device)[None, :]
        lengths = mask.long().sum(1)
        states, _ = self.rnn(gather_positions(x, (pos + shift) % length), lengths)  # valid steps first
        return gather_positions(states, (pos - shift) % length) * mask[..., None].to(states.dtype)


# ---------------------------------------------------------------------------------------------- network
class HybridShiftNet(nn.Module):
    """The multi-stage fusion network of Fig. 2.

    Text: the pretrained Transformer is split after ``insert_layer`` layers (0 = after the embedding
    layer, N = after the last layer; the paper's best is 2): ``F_t`` = embeddings + first layers,
    ``F_t* = MSG-T(F_t; F_a, F_v)``, ``M_t*`` = the remaining layers on ``F_t*`` (Sec. III-B, C-1).
    Audio/vision: ``F_a``, ``F_v`` = RNN states (Eqs. 1-2, ``rnn_variant`` of Table VI).
    MBA (Sec. III-C-2): ``M_tv* = MBA(M_t*, F_v)``, ``M_ta* = MBA(M_t*, F_a)``; with ``mba_crossed``
    (the paper's wording) ``M_tv*`` is MSG-A's text input and ``M_ta*`` MSG-V's; otherwise each MSG
    gets the MBA output of its own modality. ``M_a* = MSG-A(F_a; text, F_v)``,
    ``M_v* = MSG-V(F_v; text, F_a)``. Fusion: ``[M_t*; M_a*; M_v*]`` -> fully connected layer (tanh)
    -> the ``[CLS]`` position -> linear regression (the FC is position-wise, so it is applied at that
    position only, which is the same and cheaper).

    Ablation switches (Table III): ``use_msg_t``, ``use_msg_a``, ``use_msg_v``, ``use_mba`` (the
    Shifting HuberLoss switch lives in the LightningModule). With MSG-T off the Transformer runs
    unshifted (``insert_layer`` is then irrelevant); with MSG-A/V off ``M_a* = F_a``/``M_v* = F_v``;
    with MBA off the MSGs read ``M_t*`` itself.

    Modalities (Table IV), a subset of ``text``, ``audio``, ``vision``: a missing modality's stream
    (encoder, RNN) is not built, it is removed from the fusion concatenation, and the gates that would
    read it are not built (MSG-T in T+A has only its audio gate). A component left without inputs is
    dropped: MSG-T without audio and vision, MSG-A/V without any partner, MBA when no MSG-A/V reads it
    (only T, A+V, ...). With text present, the regression head reads the ``[CLS]`` position; without
    text (only A, only V, A+V) there is no ``[CLS]``, and it reads the last valid step of the fused
    nonverbal sequence (the RNN's end state, Eqs. 1-2). In T+A and T+V the one MBA there is (text with
    the present modality) feeds the one nonverbal MSG.

    Every hyper-parameter is a field of :class:`~msa_lightning.papers.hybrid_shift.config.HybridShiftConfig`
    (documented there); ``audio_dim``/``vision_dim`` must be set for the nonverbal streams used.
    """

    def __init__(self, config: HybridShiftConfig) -> None:
        super().__init__()
        c = self.config = config
        self.modalities = tuple(m for m in MODALITIES if m in c.modalities)
        self.has = {m: m in self.modalities for m in MODALITIES}
        self.dropout = nn.Dropout(c.dropout)

        dims: dict[str, int] = {}
        self.text: SplitTransformer | None = None
        self.pool, self._specials = "last", (0, 0)
        if self.has[TEXT]:
            text_model = c.text_model
            if isinstance(text_model, str):
                tiny = (
                    {"hidden_size": c.tiny_hidden_size, "num_layers": c.tiny_num_layers}
                    if text_model in TINY_MODELS
                    else {}
                )
                text_model = load_model(text_model, **tiny)
            if not c.finetune_text:
                freeze(text_model)
            self.text = SplitTransformer(text_model, c.insert_layer)
            dims[TEXT] = self.text.hidden_size
            self.pool = c.pool if c.pool != "auto" else ("last" if self.text.kind == "xlnet" else "first")
            # special tokens around the words (for nonverbal_alignment="words")
            self._specials = (0, 2) if self.text.kind == "xlnet" else (1, 1)
        self.rnn = nn.ModuleDict()
        for m, in_dim, hidden in ((AUDIO, c.audio_dim, c.audio_hidden), (VISION, c.vision_dim, c.vision_hidden)):
            if self.has[m]:
                self.rnn[m] = AlignedRNN(in_dim, hidden, c.rnn_variant, c.rnn_layers, c.dropout)
                dims[m] = self.rnn[m].out_dim
        self.dims = dims

        # MSGs: one per modality, with a gate per present partner
        wanted = {TEXT: c.use_msg_t, AUDIO: c.use_msg_a, VISION: c.use_msg_v}
        self.msg = nn.ModuleDict()
        for m in self.modalities:
            partners = {p: dims[p] for p in self.modalities if p != m}
            if wanted[m] and partners:
                self.msg[m] = MultimodalShiftingGate(
                    dims[m], partners, c.mu_init, layer_norm=c.msg_layer_norm, dropout=c.dropout
                )
            elif wanted[m]:
                log.info(
                    "HybridShift: MSG-%s dropped: no partner modality among %s", SYMBOL[m].upper(), self.modalities
                )

        # MBA: which MBA output (text adjusted with which modality) each nonverbal MSG reads
        self.mba_source: dict[str, str] = {}
        if c.use_mba and self.has[TEXT]:
            for m in (AUDIO, VISION):
                if m in self.msg:
                    other = VISION if m == AUDIO else AUDIO
                    self.mba_source[m] = other if (c.mba_crossed and self.has[other]) else m
            if not self.mba_source:
                log.info("HybridShift: MBA dropped: no MSG-A/MSG-V reads its output")
        self.mba = nn.ModuleDict(
            {
                o: MaskedBimodalAdjustment(
                    dims[TEXT], dims[o], c.mba_dim, c.mba_max_len, c.text_kernel, c.nonverbal_kernel
                )
                for o in sorted(set(self.mba_source.values()))
            }
        )

        fused = sum(dims.values())
        self.fusion = nn.Linear(fused, c.fusion_dim)
        self.head = nn.Linear(c.fusion_dim, 1)

    # ------------------------------------------------------------------ inputs
    def _sequence_mask(self, batch: MSABatch) -> torch.Tensor:
        if self.has[TEXT]:
            return batch.text_mask.bool()
        masks = []
        for m in (AUDIO, VISION):
            if self.has[m]:
                x, lengths = getattr(batch, m), getattr(batch, f"{m}_lengths")
                masks.append(lengths_to_mask(lengths, x.shape[1]))
        if len(masks) == 2 and masks[0].shape != masks[1].shape:
            raise ValueError(
                f"audio ({masks[0].shape[1]} frames) and vision ({masks[1].shape[1]} frames) must be "
                f"aligned for MSG-A/MSG-V: use the word-aligned feature file"
            )
        return masks[0] & masks[1] if len(masks) == 2 else masks[0]

    def _frames(self, batch: MSABatch, m: str, mask: torch.Tensor) -> torch.Tensor:
        x = getattr(batch, m)
        if self.has[TEXT]:
            leading, trailing = self._specials
            c = self.config
            return align_frames(x, mask, c.nonverbal_alignment, leading, trailing, c.frame_offset, name=m)
        return x * mask[..., None].to(x.dtype)

    def pool_index(self, mask: torch.Tensor) -> torch.Tensor:
        """The position the regression head reads: ``[CLS]`` with text, else the last valid step."""
        first = first_valid(mask)
        if self.has[TEXT] and self.pool == "first":
            return first
        return first + mask.long().sum(1) - 1

    # ------------------------------------------------------------------ forward
    def forward(self, batch: MSABatch, unshifted_text: bool = False) -> MSAOutput:
        """Returns an :class:`~msa_lightning.output.MSAOutput` with

        * ``M`` ``[B]``: the sentiment score;
        * ``features``: the streams ``F_t``/``M_t``/``F_a``/``M_a``/``F_v``/``M_v`` ``[B, L, *]``
          (``F_t`` syntactic-level, ``M_*`` final), with ``unshifted_text`` also ``M_t_unshifted``
          (the remaining layers on ``F_t`` without MSG-T, for the "without MSG" analysis), and
          ``fusion`` ``[B, fusion_dim]``;
        * ``extras``: ``mask`` ``[B, L]`` bool (valid positions: text tokens, or frames without text),
          ``pool_index`` ``[B]``, per active MSG (by modality name) ``shift.<m>`` (``h_s [B, L, dim]``) and
          ``eta.<m>`` (``[B, L, 1]``), per MBA (by partner modality) ``p_att.<o>``/``x_att.<o>``
          (the ``[B, L, L]`` maps of Eqs. 15-16); ``out.group("shift")`` reads a group as a dict.
        """
        mask = self._sequence_mask(batch)
        feats: dict[str, torch.Tensor] = {}
        for m in (AUDIO, VISION):
            if self.has[m]:
                feats[f"F_{SYMBOL[m]}"] = self.dropout(self.rnn[m](self._frames(batch, m, mask), mask))
        extras: dict[str, torch.Tensor] = {"mask": mask}

        nonverbal = {m: feats[f"F_{SYMBOL[m]}"] for m in (AUDIO, VISION) if self.has[m]}
        if self.has[TEXT]:
            f_t, ctx = self.text.lower(batch.text_ids, batch.text_mask, batch.text_segment)
            feats["F_t"] = f_t
            if TEXT in self.msg:
                shifted, extras[f"shift.{TEXT}"], extras[f"eta.{TEXT}"] = self.msg[TEXT](f_t, nonverbal)
            else:
                shifted = f_t
            feats["M_t"] = self.text.upper(shifted, ctx)
            if unshifted_text:
                feats["M_t_unshifted"] = self.text.upper(f_t, ctx) if TEXT in self.msg else feats["M_t"]
            adjusted = {}
            for o, mba in self.mba.items():
                adjusted[o], extras[f"p_att.{o}"], extras[f"x_att.{o}"] = mba(feats["M_t"], nonverbal[o], mask)

        for m in (AUDIO, VISION):
            key = f"M_{SYMBOL[m]}"
            if m not in self.msg:
                if self.has[m]:
                    feats[key] = nonverbal[m]
                continue
            partners = {p: nonverbal[p] for p in (AUDIO, VISION) if p != m and self.has[p]}
            if self.has[TEXT]:
                partners[TEXT] = adjusted[self.mba_source[m]] if m in self.mba_source else feats["M_t"]
            feats[key], extras[f"shift.{m}"], extras[f"eta.{m}"] = self.msg[m](nonverbal[m], partners)

        index = self.pool_index(mask)
        streams = [feats[f"M_{SYMBOL[m]}"] for m in self.modalities]
        picked = gather_positions(torch.cat(streams, dim=-1), index[:, None])[:, 0]
        feats["fusion"] = self.dropout(torch.tanh(self.fusion(picked)))
        extras["pool_index"] = index
        return MSAOutput(M=self.head(feats["fusion"]).squeeze(-1), features=feats, extras=extras)

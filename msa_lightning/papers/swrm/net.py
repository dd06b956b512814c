"""The networks of Self-MM and SWRM (Eqs. in module.py's docstring): plain nn.Modules returning MSAOutput."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from msa_lightning.batch import MSABatch
from msa_lightning.errors import ConfigError
from msa_lightning.nn.rnn import SequenceEncoder
from msa_lightning.nn.text_encoder import TextEncoder
from msa_lightning.output import MSAOutput

UNIMODAL = ("T", "A", "V")


EXTRA_KEYS = ("swrm_position", "swrm_gate", "swrm_candidates")


def _head(dim: int, layers: int) -> nn.Module:
    if layers == 1:
        return nn.Linear(dim, 1)
    if layers == 2:
        return nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, 1))
    raise ConfigError(
        f"model.init_args.head_layers must be 1 (the papers' equations) or 2 (Self-MM's code), got {layers}"
    )


def pseudo_align(x: torch.Tensor, lengths: torch.Tensor, n_l: torch.Tensor, width: int) -> torch.Tensor:
    """SWRM's pseudo-alignment (Section 3.2): ``[B, T, D]`` frames -> ``[B, width, D]``, one vector per token.

    Sample ``b`` with ``n_l[b]`` tokens and ``lengths[b]`` valid frames is cut into groups of
    ``g = floor(lengths / n_l)`` frames (at least 1); token ``t < n_l`` gets the mean of frames
    ``[t g, (t + 1) g)``, the remainder frames are dropped. Tokens without frames (fewer frames than
    tokens) and padding positions get zeros. Computed with cumulative sums, no loop over samples.
    """
    b, t_max, d = x.shape
    n_l = n_l.clamp(min=1)
    group = (lengths // n_l).clamp(min=1)  # [B]
    t = torch.arange(width, device=x.device)
    start = (t[None, :] * group[:, None]).clamp(max=lengths[:, None])  # [B, width]
    end = ((t[None, :] + 1) * group[:, None]).clamp(max=lengths[:, None])
    csum = torch.cat([x.new_zeros(b, 1, d), x.cumsum(dim=1)], dim=1)  # [B, T + 1, D]
    gather = lambda idx: csum.gather(1, idx.clamp(max=t_max)[..., None].expand(-1, -1, d))  # noqa: E731
    count = (end - start).to(x.dtype)
    valid = (t[None, :] < n_l[:, None]) & (count > 0)
    return torch.where(valid[..., None], (gather(end) - gather(start)) / count.clamp(min=1)[..., None], 0.0)


class SelfMMNet(nn.Module):
    """Self-MM's network (Yu et al., 2021; SWRM's backbone): BERT ``[CLS]`` ``v_l``, LSTM summaries
    ``v_a``/``v_v``, the fusion layer (SWRM Eq. 5) and the heads (Eq. 6). Arguments: :class:`SelfMMModule`;
    ``unimodal_heads`` builds the text/audio/visual heads (trained with ULGM labels).

    ``forward`` returns ``M``, ``unimodal`` ``{T, A, V}`` (with ``unimodal_heads``), ``features`` the head
    features ``F_s`` (``{M, T, A, V}``: what ULGM reads) and ``extras`` from the text path (SWRM's gates).
    """

    def __init__(
        self,
        audio_dim: int,
        vision_dim: int,
        text_model: str = "bert-base-uncased",
        finetune_text: bool = True,
        audio_hidden: int = 16,
        vision_hidden: int = 32,
        audio_out: int = 16,
        vision_out: int = 32,
        text_head_dim: int = 32,
        audio_head_dim: int = 16,
        vision_head_dim: int = 32,
        fusion_dim: int = 128,
        audio_lstm_dropout: float = 0.0,
        vision_lstm_dropout: float = 0.0,
        text_dropout: float = 0.0,
        audio_dropout: float = 0.1,
        vision_dropout: float = 0.1,
        fusion_dropout: float = 0.1,
        head_layers: int = 1,
        unimodal_heads: bool = True,
    ) -> None:
        super().__init__()
        self.text_encoder = TextEncoder(text_model, finetune=finetune_text)
        if getattr(self.text_encoder.model, "pooler", None) is not None:
            # the [CLS] state is read directly; an unused pooler would make DDP need find_unused_parameters
            self.text_encoder.model.pooler = None
        d_text = self.text_encoder.hidden_size
        self.audio_rnn = SequenceEncoder(
            audio_dim, audio_hidden, "sLSTM", dropout=audio_lstm_dropout, out_dim=audio_out
        )
        self.vision_rnn = SequenceEncoder(
            vision_dim, vision_hidden, "sLSTM", dropout=vision_lstm_dropout, out_dim=vision_out
        )
        # Eq. 5: v_f = ReLU(W4 [v_l; v_v; v_a] + b4); unimodal head features F_s = ReLU(W_s v_s + b_s)
        self.dropout = nn.ModuleDict(
            {
                "M": nn.Dropout(fusion_dropout),
                "T": nn.Dropout(text_dropout),
                "A": nn.Dropout(audio_dropout),
                "V": nn.Dropout(vision_dropout),
            }
        )
        hidden = {
            "M": nn.Linear(d_text + vision_out + audio_out, fusion_dim),
            "T": nn.Linear(d_text, text_head_dim),
            "A": nn.Linear(audio_out, audio_head_dim),
            "V": nn.Linear(vision_out, vision_head_dim),
        }
        # without ULGM the unimodal heads would get no loss (and DDP would find unused parameters)
        self.head_keys = ("M", *UNIMODAL) if unimodal_heads else ("M",)
        self.hidden = nn.ModuleDict({key: hidden[key] for key in self.head_keys})
        dims = {"M": fusion_dim, "T": text_head_dim, "A": audio_head_dim, "V": vision_head_dim}
        self.heads = nn.ModuleDict({key: _head(dims[key], head_layers) for key in self.head_keys})  # Eq. 6

    def text_vector(self, batch: MSABatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``v_l`` (BERT's ``[CLS]`` state) and extra outputs; SWRM refines the embeddings first."""
        states = self.text_encoder(batch.text_ids, batch.text_mask, batch.text_segment).last_hidden_state
        return states[:, 0], {}

    def forward(self, batch: MSABatch) -> MSAOutput:
        v_l, extra = self.text_vector(batch)
        _, v_a = self.audio_rnn(batch.audio, batch.audio_lengths)
        _, v_v = self.vision_rnn(batch.vision, batch.vision_lengths)
        inputs = {"M": torch.cat([v_l, v_v, v_a], dim=-1), "T": v_l, "A": v_a, "V": v_v}
        features = {key: F.relu(self.hidden[key](self.dropout[key](inputs[key]))) for key in self.head_keys}
        preds = {key: self.heads[key](f).squeeze(-1) for key, f in features.items()}
        return MSAOutput(M=preds.pop("M"), unimodal=preds, features=features, extras=extra)


class SWRMNet(SelfMMNet):
    """SWRM's network: :class:`SelfMMNet` with the sentiment word refinement of Eqs. 1-4 on BERT's input
    embeddings. Arguments: :class:`SWRMModule` (``mask_token_id`` is required here)."""

    def __init__(
        self,
        audio_dim: int,
        vision_dim: int,
        mask_token_id: int,
        context_vision_hidden: int = 16,
        context_audio_hidden: int = 32,
        context_av_hidden: int = 48,
        use_position: bool = True,
        use_attention: bool = True,
        multimodal: bool = True,
        detach_context: bool = False,
        **kwargs,
    ) -> None:
        super().__init__(audio_dim, vision_dim, **kwargs)
        self.register_buffer("mask_token", torch.tensor(int(mask_token_id)), persistent=False)
        self.use_position, self.use_attention, self.multimodal = use_position, use_attention, multimodal
        self.detach_context = detach_context
        d_x = self.text_encoder.hidden_size  # d_lx: word embeddings and BERT states share this size
        if multimodal:  # Eq. 1
            self.context_v = SequenceEncoder(vision_dim, context_vision_hidden, "sLSTM")
            self.context_a = SequenceEncoder(audio_dim, context_audio_hidden, "sLSTM")
            self.context_va = SequenceEncoder(vision_dim + audio_dim, context_av_hidden, "sLSTM")
            d_av = context_vision_hidden + context_audio_hidden + context_av_hidden
        else:
            d_av = 0
        self.gate = nn.Linear(d_x + d_av, 1)  # W1, b1 (Eq. 2)
        if use_position and use_attention:
            self.attention = nn.Linear(d_x + (d_av if multimodal else d_x), 1)  # W2, b2 (Eq. 3)
            self.mask_gate = nn.Linear(2 * d_x, 1)  # W3, b3 (Eq. 4)

    # ------------------------------------------------------------------ Eq. 1
    def context(self, batch: MSABatch, embeddings: torch.Tensor) -> torch.Tensor:
        """``[h_l; h_v; h_a; h_va]`` per token ``[B, L, d]`` (``h_l`` only when not ``multimodal``)."""
        mask = batch.text_mask
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.detach_context):
            h_l = self.text_encoder(
                attention_mask=mask, token_type_ids=batch.text_segment, inputs_embeds=embeddings
            ).last_hidden_state
        if not self.multimodal:
            return h_l
        n_l, width = mask.sum(1), mask.shape[1]
        u_v = pseudo_align(batch.vision, batch.vision_lengths, n_l, width)
        u_a = pseudo_align(batch.audio, batch.audio_lengths, n_l, width)
        h_v, _ = self.context_v(u_v, n_l)
        h_a, _ = self.context_a(u_a, n_l)
        h_va, _ = self.context_va(torch.cat([u_v, u_a], dim=-1), n_l)
        return torch.cat([h_l, h_v, h_a, h_va], dim=-1)

    # ------------------------------------------------------------------ Eqs. 2-4
    def refine(self, batch: MSABatch, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Refined input embeddings ``z_l`` ``[B, L, H]`` from the word embeddings ``x`` ``[B, L, H]``."""
        ctx = self.context(batch, x)
        x_mask = self.text_encoder.embed(self.mask_token)  # [H]
        width = x.shape[1]
        if not self.use_position:  # w/o Position: every word position, [MASK] only
            t = torch.arange(width, device=x.device)
            n_l = batch.text_mask.sum(1)
            words = (t[None, :] >= 1) & (t[None, :] < (n_l - 1)[:, None])  # not [CLS]/[SEP]/padding
            g = torch.sigmoid(self.gate(ctx)) * words[..., None].to(x.dtype)  # [B, L, 1]
            return (1 - g) * x + g * x_mask, {"swrm_gate_value": g.squeeze(-1)}

        s, p = self._extras(batch)
        rows = torch.arange(len(s), device=x.device)
        x_s, ctx_s = x[rows, s], ctx[rows, s]  # [B, H], [B, d]
        g_v = torch.sigmoid(self.gate(ctx_s))  # Eq. 2 [B, 1]
        gp = g_v * p[:, None].to(x.dtype)
        r_v = (1 - gp) * x_s
        extra = {"swrm_gate_value": g_v.squeeze(-1)}
        if self.use_attention:  # Eq. 3
            x_c = self.text_encoder.embed(batch.extras["swrm_candidates"])  # [B, k, H]
            d_x = x.shape[-1]
            att_ctx = ctx_s[:, d_x:] if self.multimodal else ctx_s  # [h_v; h_a; h_va] or h_l
            scores = self.attention(torch.cat([x_c, att_ctx[:, None, :].expand(-1, x_c.shape[1], -1)], dim=-1))
            w = torch.softmax(scores.squeeze(-1), dim=-1)  # [B, k]
            r_e = torch.einsum("bk,bkh->bh", w, x_c)
            g_mask = torch.sigmoid(self.mask_gate(torch.cat([r_e, x_mask.expand_as(r_e)], dim=-1)))  # Eq. 4
            r_add = g_mask * r_e + (1 - g_mask) * x_mask
            extra["swrm_attention"] = w
        else:
            r_add = x_mask.expand_as(x_s)
        r_l = gp * r_add + r_v
        at_s = torch.arange(width, device=x.device)[None, :] == s[:, None]  # [B, L]
        return torch.where(at_s[..., None], r_l[:, None, :], x), extra

    def _extras(self, batch: MSABatch) -> tuple[torch.Tensor, torch.Tensor]:
        # positions are checked against the text width once, in SWRMModule.setup (no device sync per step)
        needed = EXTRA_KEYS if self.use_attention else EXTRA_KEYS[:2]
        missing = [k for k in needed if k not in batch.extras]
        if missing:
            raise KeyError(
                f"SWRMModule needs batch.extras {list(needed)} (missing {missing}): use "
                "msa_lightning.papers.swrm.data.MOSIASRDataModule, which runs the sentiment position precompute"
            )
        return batch.extras["swrm_position"].long(), batch.extras["swrm_gate"]

    def text_vector(self, batch: MSABatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        x = self.text_encoder.embed(batch.text_ids)  # x_l
        z, extra = self.refine(batch, x)
        states = self.text_encoder(
            attention_mask=batch.text_mask, token_type_ids=batch.text_segment, inputs_embeds=z
        ).last_hidden_state
        return states[:, 0], extra  # Eq. 5: v_l = [CLS] of BERT(z_l)

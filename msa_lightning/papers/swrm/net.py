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
from msa_lightning.papers.swrm.config import SelfMMConfig, SWRMConfig

UNIMODAL = ("T", "A", "V")


EXTRA_KEYS = ("swrm_position", "swrm_gate", "swrm_candidates")


def _head(dim: int, layers: int) -> nn.Module:
    """Eq. 6's output layer (``layers`` 1), or Self-MM's code's hidden layer and output layer (2)."""
    if layers == 1:
        return nn.Linear(dim, 1)
    return nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, 1))


def head_dims(config: SelfMMConfig) -> dict[str, int]:
    """The feature size of each head ``F_s``, ``{M, T, A, V}``: what ULGM's memories hold."""
    return {"M": config.fusion_dim, "T": config.text_head_dim, "A": config.audio_head_dim, "V": config.vision_head_dim}


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
    ``v_a``/``v_v``, the fusion layer (SWRM Eq. 5) and the heads (Eq. 6); hyper-parameters:
    :class:`~msa_lightning.papers.swrm.config.SelfMMConfig` (``use_ulgm`` builds the text/audio/visual heads).

    ``forward`` returns ``M``, ``unimodal`` ``{T, A, V}`` (with ``unimodal_heads``), ``features`` the head
    features ``F_s`` (``{M, T, A, V}``: what ULGM reads) and ``extras`` from the text path (SWRM's gates).
    """

    def __init__(self, config: SelfMMConfig) -> None:
        super().__init__()
        c = self.config = config
        self.text_encoder = TextEncoder(c.text_model, finetune=c.finetune_text)
        if getattr(self.text_encoder.model, "pooler", None) is not None:
            # the [CLS] state is read directly; an unused pooler would make DDP need find_unused_parameters
            self.text_encoder.model.pooler = None
        d_text = self.text_encoder.hidden_size
        self.audio_rnn = SequenceEncoder(
            c.audio_dim, c.audio_hidden, "sLSTM", dropout=c.audio_lstm_dropout, out_dim=c.audio_out
        )
        self.vision_rnn = SequenceEncoder(
            c.vision_dim, c.vision_hidden, "sLSTM", dropout=c.vision_lstm_dropout, out_dim=c.vision_out
        )
        # Eq. 5: v_f = ReLU(W4 [v_l; v_v; v_a] + b4); unimodal head features F_s = ReLU(W_s v_s + b_s)
        self.dropout = nn.ModuleDict(
            {
                "M": nn.Dropout(c.fusion_dropout),
                "T": nn.Dropout(c.text_dropout),
                "A": nn.Dropout(c.audio_dropout),
                "V": nn.Dropout(c.vision_dropout),
            }
        )
        hidden = {
            "M": nn.Linear(d_text + c.vision_out + c.audio_out, c.fusion_dim),
            "T": nn.Linear(d_text, c.text_head_dim),
            "A": nn.Linear(c.audio_out, c.audio_head_dim),
            "V": nn.Linear(c.vision_out, c.vision_head_dim),
        }
        # without ULGM the unimodal heads would get no loss (and DDP would find unused parameters)
        self.head_keys = ("M", *UNIMODAL) if c.use_ulgm else ("M",)
        self.hidden = nn.ModuleDict({key: hidden[key] for key in self.head_keys})
        dims = head_dims(c)
        self.heads = nn.ModuleDict({key: _head(dims[key], c.head_layers) for key in self.head_keys})  # Eq. 6

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
    embeddings; hyper-parameters: :class:`~msa_lightning.papers.swrm.config.SWRMConfig` (its ``mask_token_id``
    must be set: the module fills it from the tokenizer)."""

    def __init__(self, config: SWRMConfig) -> None:
        super().__init__(config)
        c = config
        if c.mask_token_id is None:
            raise ConfigError("model.init_args.mask_token_id: SWRMNet needs the id of [MASK] (the module sets it)")
        self.register_buffer("mask_token", torch.tensor(int(c.mask_token_id)), persistent=False)
        self.use_position, self.use_attention, self.multimodal = c.use_position, c.use_attention, c.multimodal
        self.detach_context = c.detach_context
        d_x = self.text_encoder.hidden_size  # d_lx: word embeddings and BERT states share this size
        if c.multimodal:  # Eq. 1
            self.context_v = SequenceEncoder(c.vision_dim, c.context_vision_hidden, "sLSTM")
            self.context_a = SequenceEncoder(c.audio_dim, c.context_audio_hidden, "sLSTM")
            self.context_va = SequenceEncoder(c.vision_dim + c.audio_dim, c.context_av_hidden, "sLSTM")
            d_av = c.context_vision_hidden + c.context_audio_hidden + c.context_av_hidden
        else:
            d_av = 0
        self.gate = nn.Linear(d_x + d_av, 1)  # W1, b1 (Eq. 2)
        if c.use_position and c.use_attention:
            self.attention = nn.Linear(d_x + (d_av if c.multimodal else d_x), 1)  # W2, b2 (Eq. 3)
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

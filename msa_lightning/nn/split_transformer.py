"""Running a Hugging Face encoder in two parts, so that a module can act between its layers.

HybridShift (Lin & Hu, TMM 2024, Sec. III-B) shifts the *syntactic-level* text states ``F_t`` (the
output of the embeddings and the first ``i`` layers) with MSG-T and feeds the shifted states through
the remaining ``N - i`` layers to get the *semantic-level* ``M_t*``; MAG-BERT (Rahman et al., ACL 2020) adds
its multimodal displacement to the states after layer ``i`` the same way. :class:`SplitTransformer` gives

* :meth:`SplitTransformer.lower` — embeddings + layers ``[0, i)``: ``(F_t [B, L, H], context)``;
* :meth:`SplitTransformer.upper` — layers ``[i, N)`` on (possibly shifted) states ``[B, L, H]``;

where ``context`` carries everything the remaining layers need besides the hidden states, built once
per batch exactly as the unsplit model builds it: for BERT-like models the attention mask in the
format the model's attention implementation expects (eager, SDPA, ...); for XLNet the two-stream
masks derived from ``attention_mask`` (any padding side: XLNet's tokenizer pads on the *left*),
the segment matrix, and the relative positional encoding (which depends only on the sequence
length, so it is the same before and after the split). ``upper(lower(x))`` therefore equals the
unsplit model's ``last_hidden_state`` for every split point, which ``tests/hybrid_shift/test_hybrid_shift.py``
checks for BERT and XLNet with padding present.

``split_layer`` counts from the embeddings: ``0`` splits right after the embedding layer, ``N``
after the last layer (``upper`` is then the identity, up to XLNet's final dropout).

Supported: BERT-like encoders (anything with ``.embeddings`` and ``.encoder.layer``: BERT, RoBERTa,
ELECTRA, ...) and XLNet (``model_type == "xlnet"``). Only public transformers API is used (the modules
themselves and ``masking_utils``), so a new release cannot break the split silently: the equality test runs
on whatever is installed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


def encoder_attention_mask(model: nn.Module, embeddings: torch.Tensor, attention_mask: torch.Tensor):
    """The mask a BERT-like model's layers take, in the format of its attention implementation, from the
    public builder the model files call (eager: additive 4-d; SDPA: boolean 4-d, or None without padding)."""
    from transformers.masking_utils import create_bidirectional_mask

    return create_bidirectional_mask(config=model.config, inputs_embeds=embeddings, attention_mask=attention_mask)


@dataclass
class SplitContext:
    """What the layers after the split need besides the hidden states (built once per batch)."""

    attention_mask: torch.Tensor  # [B, L] long/float, 1 = real token (as given)
    extra: dict[str, Any]


class SplitTransformer(nn.Module):
    """A pretrained encoder run as ``lower`` (embeddings + first ``split_layer`` layers) and ``upper``.

    Args:
        model: a Hugging Face base model (``BertModel``, ``XLNetModel``, ...), not a task head.
        split_layer: ``0`` (after the embeddings) to ``num_layers`` (after the last layer).
    """

    def __init__(self, model: nn.Module, split_layer: int) -> None:
        super().__init__()
        self.model = model
        config = model.config
        self.kind = "xlnet" if getattr(config, "model_type", "") == "xlnet" else "bert"
        if self.kind == "bert" and not (
            hasattr(model, "embeddings") and hasattr(getattr(model, "encoder", None), "layer")
        ):
            raise ValueError(
                f"SplitTransformer supports BERT-like encoders (with .embeddings and .encoder.layer) "
                f"and XLNet; got {type(model).__name__} (model_type={getattr(config, 'model_type', None)!r})"
            )
        if self.kind == "xlnet" and getattr(model, "attn_type", "bi") != "bi":
            raise ValueError(
                f"SplitTransformer needs XLNet with attn_type='bi' (bidirectional), got {model.attn_type!r}"
            )
        n = self.num_layers
        if not 0 <= split_layer <= n:
            raise ValueError(
                f"split_layer={split_layer} is out of range for {type(model).__name__} with {n} layers: "
                f"use 0 (after the embeddings) to {n} (after the last layer)"
            )
        self.split_layer = split_layer

    # ------------------------------------------------------------------ facts
    @property
    def layers(self) -> nn.ModuleList:
        return self.model.layer if self.kind == "xlnet" else self.model.encoder.layer

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def hidden_size(self) -> int:
        return self.model.config.hidden_size

    @property
    def pad_side(self) -> str:
        """The padding side of the model's usual tokenizer (XLNet: left, others: right)."""
        return "left" if self.kind == "xlnet" else "right"

    # ------------------------------------------------------------------ the two parts
    def lower(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, SplitContext]:
        """Embeddings + layers ``[0, split_layer)``: ``(F_t [B, L, H], context)``."""
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be [batch, length], got shape {tuple(input_ids.shape)}")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if attention_mask.shape != input_ids.shape:
            raise ValueError(
                f"attention_mask {tuple(attention_mask.shape)} and input_ids {tuple(input_ids.shape)} differ"
            )
        if self.kind == "xlnet":
            h, ctx = self._xlnet_embed(input_ids, attention_mask, token_type_ids)
        else:
            h, ctx = self._bert_embed(input_ids, attention_mask, token_type_ids)
        return self.run_layers(h, ctx, 0, self.split_layer), ctx

    def upper(self, hidden: torch.Tensor, context: SplitContext) -> torch.Tensor:
        """Layers ``[split_layer, N)`` on ``hidden [B, L, H]``: the model's ``last_hidden_state``."""
        out = self.run_layers(hidden, context, self.split_layer, self.num_layers)
        if self.kind == "xlnet":
            out = self.model.dropout(out)  # XLNetModel applies dropout to its output
        return out

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        shift=None,
    ) -> torch.Tensor:
        """``upper(shift(lower(...)))``; ``shift`` maps ``[B, L, H] -> [B, L, H]`` (default: identity)."""
        h, ctx = self.lower(input_ids, attention_mask, token_type_ids)
        if shift is not None:
            h = shift(h)
        return self.upper(h, ctx)

    def run_layers(self, hidden: torch.Tensor, context: SplitContext, start: int, stop: int) -> torch.Tensor:
        """Layers ``[start, stop)`` on batch-first states ``[B, L, H]``."""
        if start >= stop:
            return hidden
        if self.kind == "xlnet":
            return self._xlnet_layers(hidden, context, start, stop)
        mask = context.extra["mask"]
        for layer in self.layers[start:stop]:
            out = layer(hidden, mask)
            hidden = out[0] if isinstance(out, tuple) else out
        return hidden

    # ------------------------------------------------------------------ BERT-like
    def _bert_embed(self, input_ids, attention_mask, token_type_ids):
        model = self.model
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        emb = model.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)
        return emb, SplitContext(attention_mask, {"mask": encoder_attention_mask(model, emb, attention_mask)})

    # ------------------------------------------------------------------ XLNet
    def _xlnet_embed(self, input_ids, attention_mask, token_type_ids):
        """Mirrors ``XLNetModel.forward`` without memories, permutation masks or target mappings:
        XLNet works time-first (``[L, B, ...]``); the states handed out are batch-first."""
        model = self.model
        qlen, bsz = input_ids.shape[1], input_ids.shape[0]
        dtype_float = model.dtype
        # data mask: 1 where the key is padding (XLNet's ``input_mask``), [qlen(=1), klen, bsz]
        input_mask = 1.0 - attention_mask.transpose(0, 1).to(dtype_float)
        attn_mask = (input_mask[None][:, :, :, None] > 0).to(dtype_float)  # [1, klen, bsz, 1]
        non_tgt_mask = -torch.eye(qlen, device=input_ids.device, dtype=dtype_float)
        non_tgt_mask = ((attn_mask + non_tgt_mask[:, :, None, None]) > 0).to(attn_mask)  # [q, k, bsz, 1]
        seg_mat = None
        if token_type_ids is not None:
            tt = token_type_ids.transpose(0, 1)
            seg_mat = (tt[:, None] != tt[None, :]).long()
            seg_mat = nn.functional.one_hot(seg_mat, num_classes=2).to(dtype_float)
        emb = model.dropout(model.word_embedding(input_ids))  # [B, L, H]
        pos_emb = model.dropout(model.relative_positional_encoding(qlen, qlen, bsz=bsz, device=emb.device))
        return emb, SplitContext(
            attention_mask,
            {"non_tgt_mask": non_tgt_mask, "seg_mat": seg_mat, "pos_emb": pos_emb, "attn_mask": attn_mask},
        )

    def _xlnet_layers(self, hidden, context, start, stop):
        extra = context.extra
        h = hidden.transpose(0, 1)
        for layer in self.layers[start:stop]:
            h = layer(
                h,
                None,
                attn_mask_h=extra["non_tgt_mask"],
                attn_mask_g=extra["attn_mask"],
                r=extra["pos_emb"],
                seg_mat=extra["seg_mat"],
                mems=None,
                target_mapping=None,
            )[0]
        return h.transpose(0, 1)

"""A BERT-style text encoder wrapper shared by the paper modules."""

from __future__ import annotations

import torch
from torch import nn

from msa_lightning.nn.pretrained import freeze, load_model


class TextEncoder(nn.Module):
    """Wraps a Hugging Face encoder (BERT, XLNet, RoBERTa, ...).

    Args:
        pretrained: hub name, local path, or ``tiny-bert``/``tiny-xlnet`` (random, in-process).
        finetune: train the encoder's weights; when False it is a frozen extractor (no weight
            gradients, eval mode: :func:`~msa_lightning.nn.pretrained.freeze`), but gradients still
            flow into ``inputs_embeds`` (SWRM refines input embeddings through a frozen encoder).
        output_hidden_states: also return every layer's states.
        tiny_kwargs: ``hidden_size``/``num_layers`` for the tiny models.
    """

    def __init__(
        self,
        pretrained: str = "bert-base-uncased",
        finetune: bool = True,
        output_hidden_states: bool = False,
        **tiny_kwargs,
    ) -> None:
        super().__init__()
        self.model = load_model(pretrained, **tiny_kwargs)
        self.output_hidden_states = output_hidden_states
        if not finetune:
            freeze(self.model)

    @property
    def hidden_size(self) -> int:
        return self.model.config.hidden_size

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Input word embeddings ``[B, L, H]`` (before position/segment embeddings)."""
        return self.model.get_input_embeddings()(input_ids)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
    ):
        """Returns the model output: ``last_hidden_state`` ``[B, L, H]`` (and ``hidden_states``)."""
        return self.model(
            input_ids=None if inputs_embeds is not None else input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            inputs_embeds=inputs_embeds,
            output_hidden_states=self.output_hidden_states,
            return_dict=True,
        )

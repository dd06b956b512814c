"""Recurrent sequence encoders over padded, variable-length feature sequences."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

RNN_VARIANTS = ("sLSTM", "bLSTM", "sGRU", "bGRU")


class SequenceEncoder(nn.Module):
    """LSTM/GRU over padded ``[B, T, D]`` sequences of ``lengths`` valid steps; what lies behind a sample's
    length never changes its states or summary.

    A one-directional RNN runs over the padded batch as it is and reads each sample's summary at its last
    valid step: step ``t`` only sees steps ``<= t``, so this is the same function as running over a packed
    sequence (equal up to float rounding, outputs and gradients), and on CPU it is far cheaper: the packed
    path's backward pass builds a zero gradient of the whole packed input for every time step, quadratic
    in the sequence length (375/500 frames on MOSI). Bidirectional RNNs (the backward direction must start
    at each sample's own end), and stacked layers with dropout between them (their dropout masks would
    cover padded steps and so draw different random numbers), still run packed.

    Args:
        variant: ``sLSTM``/``bLSTM``/``sGRU``/``bGRU`` (single or bi-directional LSTM or GRU).
        out_dim: size of the final summary vector; the last hidden state(s) are projected to it
            when ``project`` is set (the LSTM-then-linear pattern of the reference toolkit).

    ``forward`` returns ``(states [B, T, H*dirs], summary [B, out_dim or H*dirs])`` where
    ``summary`` is the last valid state (both directions concatenated for bidirectional RNNs).
    """

    def __init__(
        self,
        in_dim: int,
        hidden_dim: int,
        variant: str = "sLSTM",
        num_layers: int = 1,
        dropout: float = 0.0,
        out_dim: int | None = None,
    ) -> None:
        super().__init__()
        if variant not in RNN_VARIANTS:
            raise ValueError(f"unknown RNN variant {variant!r}; expected one of {RNN_VARIANTS}")
        self.bidirectional = variant.startswith("b")
        cell = nn.LSTM if variant.endswith("LSTM") else nn.GRU
        self.rnn = cell(
            in_dim,
            hidden_dim,
            num_layers=num_layers,
            batch_first=True,
            bidirectional=self.bidirectional,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        self.state_dim = hidden_dim * (2 if self.bidirectional else 1)
        self.dropout = nn.Dropout(dropout)
        self.proj = nn.Linear(self.state_dim, out_dim) if out_dim else nn.Identity()
        self.out_dim = out_dim or self.state_dim

    @property
    def runs_padded(self) -> bool:
        """Whether ``forward`` runs over the padded batch (see the class docstring) instead of packing it."""
        return not self.bidirectional and (self.rnn.num_layers == 1 or self.rnn.dropout == 0)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        total = x.shape[1]
        if lengths is None:
            lengths = torch.full((x.shape[0],), total, dtype=torch.long, device=x.device)
        if self.runs_padded:
            states, _ = self.rnn(x)
            last_step = lengths.to(device=x.device, dtype=torch.long).clamp(min=1) - 1  # a length 0 reads step 0
            last = states[torch.arange(x.shape[0], device=x.device), last_step]
            valid = torch.arange(total, device=x.device)[None, :] <= last_step[:, None]
            return torch.where(valid[..., None], states, 0.0), self.proj(self.dropout(last))
        packed = pack_padded_sequence(x, lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False)
        out, hidden = self.rnn(packed)
        states, _ = pad_packed_sequence(out, batch_first=True, total_length=total)
        h_n = hidden[0] if isinstance(hidden, tuple) else hidden  # [layers*dirs, B, H]
        last = torch.cat([h_n[-2], h_n[-1]], dim=-1) if self.bidirectional else h_n[-1]
        return states, self.proj(self.dropout(last))

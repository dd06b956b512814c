"""Self-MM's unimodal label generation module (ULGM; Yu et al., AAAI 2021), reused by SWRM.

Datasets like MOSI have only a multimodal label ``y_m``. ULGM derives a label per modality ``s``
(text, audio, vision) from how far each sample's features lie from the positive and negative class
centres, relative to the same quantity for the fusion features:

* state, for every training sample ``i``: the latest fusion features and unimodal features (the
  representations feeding each prediction head), and labels ``y_s[i]`` initialised to ``y_m[i]``;
* class centres per modality: the mean feature of the samples whose *current* label of that
  modality is ``> 0`` (positive) and ``< 0`` (negative); a class with no sample keeps its centre;
* for a sample: ``d_p, d_n`` = L2 distances to the two centres, ``delta = (d_n - d_p) / (d_p + eps)``,
  for the fusion features (``delta_f``) and for modality ``s`` (``delta_s``);
* ``y_s' = 0.5 * delta_s / (delta_f + eps) * y_m + 0.5 * (y_m + delta_s - delta_f)``, clamped to
  ``[-H, H]`` (the ``eps`` in the ratio's denominator is the reference code's);
* from the second epoch on (``n`` = epoch, counted from 1): ``y_s <- (n - 1) / (n + 1) * y_s + 2 / (n + 1) * y_s'``;
* every training step, in this order (as in the reference code): labels of the batch updated from
  its new features and the centres of the previous step (epochs >= 2), the batch's features
  stored, all centres recomputed.

The unimodal L1 losses are weighted by ``tanh(|y_s - y_m|)`` (:meth:`ULGM.weights`); the
multimodal loss is plain L1.

**DDP.** :meth:`ULGM.update` all-gathers ``(index, features)`` of every rank's batch before writing,
and every rank applies the same update to the gathered batch, so all ranks hold identical state
(a sample the distributed sampler repeats within one step is written once, its first copy).
**Checkpoints.** All state is in buffers, so it is saved with the model and a resumed run
continues with the same labels; loading a checkpoint resizes the buffers to the stored ``N``.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn


def all_gather_rows(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x [B_r, ...]`` of every rank along dim 0 (rank order; ``B_r`` may differ).
    Identity outside an initialised process group of more than one rank."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    world = dist.get_world_size()
    size = torch.tensor([x.shape[0]], device=x.device, dtype=torch.long)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    longest = int(max(int(s) for s in sizes))
    padded = x.new_zeros((longest, *x.shape[1:]))
    padded[: x.shape[0]] = x
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    return torch.cat([part[: int(s)] for part, s in zip(parts, sizes)])


class ULGM(nn.Module):
    """Args:
    feature_dims: feature size per key, the fusion key included, e.g.
        ``{"M": 128, "T": 32, "A": 16, "V": 32}``.
    num_samples: training-set size ``N`` (0 = sized later by :meth:`init_labels` or a checkpoint).
    bound: ``H``, the label clamp (3 on MOSI/MOSEI, 1 on CH-SIMS); ``None`` until the data says
        (the LightningModule sets it in ``setup``; :meth:`update` needs it).
    fusion_key: the key of the fusion features and of the multimodal label.
    eps: the small constant of the distance ratios.
    """

    def __init__(
        self,
        feature_dims: dict[str, int],
        num_samples: int = 0,
        bound: float | None = 3.0,
        fusion_key: str = "M",
        eps: float = 1e-8,
    ) -> None:
        super().__init__()
        if fusion_key not in feature_dims:
            raise ValueError(f"feature_dims {sorted(feature_dims)} must include the fusion key {fusion_key!r}")
        self.keys = list(feature_dims)
        self.fusion_key = fusion_key
        self.modalities = [k for k in self.keys if k != fusion_key]
        self.bound, self.eps = bound, eps
        for key, dim in feature_dims.items():
            self.register_buffer(f"features_{key}", torch.zeros(num_samples, dim))
            self.register_buffer(f"centers_{key}", torch.zeros(2, dim))  # row 0 positive, row 1 negative
            self.register_buffer(f"labels_{key}", torch.zeros(num_samples))  # labels_M is y_m (fixed)
        self.register_buffer("initialized", torch.tensor(False))
        self._ready = False  # a Python mirror of `initialized`: checking it costs no device sync

    @property
    def ready(self) -> bool:
        """Whether the state holds training labels (:meth:`init_labels` or a checkpoint)."""
        return self._ready

    # ------------------------------------------------------------------ state access
    @property
    def num_samples(self) -> int:
        return self.get_buffer(f"labels_{self.fusion_key}").shape[0]

    def feature(self, key: str) -> torch.Tensor:
        return self.get_buffer(f"features_{key}")

    def center(self, key: str) -> torch.Tensor:
        return self.get_buffer(f"centers_{key}")

    def label(self, key: str) -> torch.Tensor:
        return self.get_buffer(f"labels_{key}")

    def _set(self, name: str, value: torch.Tensor) -> None:
        self._buffers[name] = value

    @torch.no_grad()
    def init_labels(self, y_m: torch.Tensor) -> None:
        """Size the state to ``N = len(y_m)``: every label ``y_s = y_m``, features and centres 0."""
        y_m = torch.as_tensor(y_m, dtype=torch.float32).reshape(-1)
        device = self.label(self.fusion_key).device
        y_m = y_m.to(device)
        n = len(y_m)
        for key in self.keys:
            dim = self.feature(key).shape[1]
            self._set(f"features_{key}", torch.zeros(n, dim, device=device))
            self._set(f"centers_{key}", torch.zeros(2, dim, device=device))
            self._set(f"labels_{key}", y_m.clone())
        self.initialized.fill_(True)
        self._ready = True

    def labels(self, index: torch.Tensor) -> dict[str, torch.Tensor]:
        """Current labels ``{key: [B]}`` of the training samples ``index`` (the fusion key is ``y_m``)."""
        self._check(index)
        return {key: self.label(key)[index] for key in self.keys}

    def weights(self, index: torch.Tensor) -> dict[str, torch.Tensor]:
        """Loss weights ``tanh(|y_s - y_m|)`` per modality (the fusion loss is unweighted)."""
        y_m = self.label(self.fusion_key)[index]
        return {key: torch.tanh((self.label(key)[index] - y_m).abs()) for key in self.modalities}

    def _check(self, index: torch.Tensor) -> None:
        if not self._ready:
            raise RuntimeError(
                "ULGM state is not initialised: call init_labels(train labels) first "
                "(the LightningModule does this in setup('fit') from the datamodule)"
            )
        # the range check reads the index on the host: done where that is free (CPU); on an accelerator the
        # state was sized from the same training split as the index in setup, so it cannot fail there
        if index.device.type == "cpu" and index.numel() and int(index.max()) >= self.num_samples:
            raise IndexError(f"ULGM holds {self.num_samples} training samples, got index {int(index.max())}")

    # ------------------------------------------------------------------ the update
    def _delta(self, key: str, f: torch.Tensor) -> torch.Tensor:
        centers = self.center(key)
        d_p = (f - centers[0]).norm(dim=-1)
        d_n = (f - centers[1]).norm(dim=-1)
        return (d_n - d_p) / (d_p + self.eps)

    @torch.no_grad()
    def update(self, index: torch.Tensor, features: dict[str, torch.Tensor], epoch: int, sync: bool = True) -> None:
        """One training step's update (see the module docstring); ``epoch`` counts from 1.

        ``features`` maps every key to ``[B, d]`` (detached inside). With ``sync`` and an
        initialised process group the batches of all ranks are gathered first.
        """
        self._check(index)
        if self.bound is None:
            raise RuntimeError("ULGM.bound (H) is not set: set label_bound (3 on MOSI/MOSEI, 1 on CH-SIMS)")
        missing = set(self.keys) - set(features)
        if missing:
            raise KeyError(f"ULGM.update needs features for {sorted(missing)}")
        dims = [self.feature(k).shape[1] for k in self.keys]
        packed = torch.cat(
            [index.to(torch.float64)[:, None]]
            + [features[k].detach().to(torch.float64).reshape(len(index), -1) for k in self.keys],
            dim=1,
        )
        if sync:
            packed = all_gather_rows(packed)
        index = packed[:, 0].round().long()
        # a sample present twice in the (gathered) batch is written once: its first copy
        unique, inverse = torch.unique(index, return_inverse=True)
        first = torch.full((len(unique),), len(index), device=index.device, dtype=torch.long)
        first = first.scatter_reduce(0, inverse, torch.arange(len(index), device=index.device), reduce="amin")
        index = index[first]
        parts = packed[first, 1:].split(dims, dim=1)
        feats = {k: p.to(self.feature(k).dtype) for k, p in zip(self.keys, parts)}

        if epoch > 1:
            y_m = self.label(self.fusion_key)[index]
            delta_f = self._delta(self.fusion_key, feats[self.fusion_key])
            for key in self.modalities:
                delta_s = self._delta(key, feats[key])
                new = 0.5 * delta_s / (delta_f + self.eps) * y_m + 0.5 * (y_m + delta_s - delta_f)
                new = new.clamp(-self.bound, self.bound)
                old = self.label(key)[index]
                self.label(key)[index] = (epoch - 1) / (epoch + 1) * old + 2 / (epoch + 1) * new
        for key in self.keys:
            self.feature(key)[index] = feats[key]
        self.update_centers()

    @torch.no_grad()
    def update_centers(self) -> None:
        """Positive/negative centres per key from the current labels of that key (vectorised)."""
        for key in self.keys:
            labels, feats, centers = self.label(key), self.feature(key), self.center(key)
            groups = torch.stack([labels > 0, labels < 0]).to(feats.dtype)  # [2, N]
            counts = groups.sum(1, keepdim=True)
            means = groups @ feats / counts.clamp(min=1)
            centers.copy_(torch.where(counts > 0, means, centers))

    # ------------------------------------------------------------------ checkpoints
    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ) -> None:
        # a checkpoint knows N; a freshly built module may not: take the stored shapes
        for name, buf in list(self._buffers.items()):
            stored = state_dict.get(prefix + name)
            if buf is not None and stored is not None and stored.shape != buf.shape:
                self._buffers[name] = torch.zeros(stored.shape, dtype=buf.dtype, device=buf.device)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
        self._ready = bool(self.initialized)  # once per load, not per step

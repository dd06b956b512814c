"""What every suite DataModule offers a model: the facts of its data (:class:`DataFacts`), the one rule by which a
model's data-shaped settings follow them (:func:`follow_data`), and the loader plumbing the DataModules share
(:class:`SuiteDataModule`).

A model argument named like a fact (``audio_dim``, ``vision_dim``, ``text_dim``, ``label_bound``,
``metric_family``, ``num_train_samples``) that is left unset (``None`` or ``"auto"``) takes the data's value; a
value that is set must agree with it. The rule is applied twice with the same function: by the LightningCLI to
``model.init_args`` before the model is built, and by the model to its ``hparams`` at ``setup`` (a model built in
Python, or a checkpoint evaluated on other data).
"""

from __future__ import annotations

import math
import os
from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Any

import lightning as L
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import Dataset

from msa_lightning.errors import ConfigError


@dataclass(frozen=True)
class DataFacts:
    """What a DataModule's data says that models must agree with (read from the validated data).

    Attributes:
        label_bound: the bound ``H`` of the labels ``[-H, H]`` (ULGM's; 3 on MOSI/MOSEI, 1 on CH-SIMS).
        metric_family: ``mosi``, ``sims`` or ``simsv2`` (:data:`msa_lightning.metrics.FAMILIES`).
        num_train_samples: clips in the training split.
        audio_dim, vision_dim: feature sizes of the acoustic and visual frames (None: raw media, no frames).
        text_dim: size of precomputed text features (None: the data serves token ids only).
        feature_widths: stage name -> width of the stage features a FmlMSN meta-learner reads (None: none).
        sample_rate, fps, frame_size: how raw clips were decoded (None: not raw media).
    """

    label_bound: float
    metric_family: str
    num_train_samples: int
    audio_dim: int | None = None
    vision_dim: int | None = None
    text_dim: int | None = None
    feature_widths: dict[str, int] | None = None
    sample_rate: int | None = None
    fps: float | None = None
    frame_size: int | None = None


#: the facts a model argument of the same name follows, with how a message names each
DATA_FACTS = {
    "audio_dim": "audio features of size",
    "vision_dim": "vision features of size",
    "text_dim": "text features of size",
    "label_bound": "labels bounded by",
    "metric_family": "the metric family",
    "num_train_samples": "a number of training samples of",
}
#: a model argument holding one of these values is "not set" and takes the data's value
UNSET = (None, "auto")
#: facts a set value may differ from: ULGM resizes its memories to the data, and a checkpoint may be tested on
#: data of another size
NEVER_CONFLICT = ("num_train_samples",)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def follow_data(settings: MutableMapping[str, Any], facts: DataFacts, where: str) -> None:
    """Apply the data's ``facts`` to a model's ``settings`` (``model.init_args``, or a model's ``hparams``).

    A setting left unset (:data:`UNSET`) takes the fact; one that is set and differs raises one ConfigError naming
    both values and ``where`` the fact comes from (e.g. ``MOSIDataModule (data file /data/MOSI/unaligned_50.pkl)``).
    Only settings the model has are touched (a key ``settings`` lacks is not added); a fact that is None is skipped.
    """
    for key, phrase in DATA_FACTS.items():
        fact = getattr(facts, key)
        if fact is None or key not in settings:
            continue
        given = settings[key]
        if given is None or (isinstance(given, str) and given in UNSET):
            settings[key] = fact
        elif key not in NEVER_CONFLICT and not _same(given, fact):
            raise ConfigError(
                f"model.init_args.{key}={given!r} does not match the data: {where} has {phrase} {fact!r} "
                f"(leave model.init_args.{key} unset to take it from the data)"
            )


class SuiteDataModule(L.LightningDataModule):
    """The base of every suite DataModule.

    A subclass implements :meth:`data_facts` and :meth:`describe`, and sets ``shuffle_seed`` (and ``batch_size``);
    the base gives the seed of the training order, the (world size, rank) of the attached trainer, whether batches
    are pinned, and the DDP sampler of evaluation loaders.
    """

    #: seed of the training order; None = the global seed of ``seed_everything`` (``PL_GLOBAL_SEED``), else 0
    shuffle_seed: int | None = None

    # ------------------------------------------------------------------ the contract
    def data_facts(self) -> DataFacts:
        """The facts of the data models follow (:func:`follow_data`); reads (and validates) the data if needed."""
        raise NotImplementedError(f"{type(self).__name__} must implement data_facts()")

    def describe(self) -> str:
        """How messages name this data: its class and what it reads, e.g. ``MOSIDataModule (data file X)``."""
        return type(self).__name__

    # ------------------------------------------------------------------ loader plumbing
    @property
    def train_seed(self) -> int:
        """The seed of the training order (which depends only on this seed and the epoch)."""
        if self.shuffle_seed is not None:
            return int(self.shuffle_seed)
        return int(os.environ.get("PL_GLOBAL_SEED", 0))

    def _world(self) -> tuple[int, int]:
        """(world size, global rank) of the attached trainer; (1, 0) without one."""
        trainer = self.trainer
        return (1, 0) if trainer is None else (trainer.world_size, trainer.global_rank)

    def _pin_memory(self) -> bool:
        """Pin batches (``MSABatch.pin_memory``) when the attached trainer runs on a CUDA device."""
        device = getattr(getattr(self.trainer, "strategy", None), "root_device", None)  # tests attach bare trainers
        return getattr(device, "type", "cpu") == "cuda"

    def _eval_sampler(self, dataset: Dataset) -> UnrepeatedDistributedSampler | None:
        """Under DDP, each rank's share of an evaluation split without repeats (Lightning's default sampler repeats
        samples so that ranks get equal shares, which would count them twice in validation/test metrics)."""
        world, rank = self._world()
        if world == 1:
            return None
        return UnrepeatedDistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=False)

"""What each dataset of the field looks like: feature sizes, lengths, splits, label range.

These are the shapes of the feature files the reference toolkit (MMSA) distributes; the
synthetic generator reproduces them and the validator checks labels against ``label_range``.
"""

from __future__ import annotations

from dataclasses import dataclass

SPLITS = ("train", "valid", "test")


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    #: metric family: ``mosi`` (MOSI/MOSEI rounding metrics), ``sims`` or ``simsv2`` (interval bins)
    family: str
    label_range: tuple[float, float]
    text_len: int
    audio_dim: int
    audio_len: int
    vision_dim: int
    vision_len: int
    split_sizes: tuple[int, int, int]
    unaligned_file: str
    #: label keys besides ``M`` the real files carry
    unimodal_labels: tuple[str, ...] = ()

    @property
    def label_bound(self) -> float:
        return self.label_range[1]


DATASETS: dict[str, DatasetSpec] = {
    "mosi": DatasetSpec("mosi", "mosi", (-3.0, 3.0), 50, 5, 375, 20, 500, (1284, 229, 686), "unaligned_50.pkl"),
    "mosei": DatasetSpec("mosei", "mosi", (-3.0, 3.0), 50, 74, 500, 35, 500, (16326, 1871, 4659), "unaligned_50.pkl"),
    "sims": DatasetSpec(
        "sims", "sims", (-1.0, 1.0), 39, 33, 400, 709, 55, (1368, 456, 457), "unaligned_39.pkl", ("T", "A", "V")
    ),
    "simsv2": DatasetSpec(
        "simsv2", "simsv2", (-1.0, 1.0), 50, 25, 925, 177, 232, (2722, 647, 1034), "unaligned_50.pkl", ("T", "A", "V")
    ),
}
ALIGNED_FILE = "aligned_50.pkl"


def get_spec(name: str) -> DatasetSpec:
    try:
        return DATASETS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; expected one of {sorted(DATASETS)}") from None

"""Evaluation metrics of the MOSI/MOSEI and CH-SIMS families (see :mod:`.msa`)."""

from msa_lightning.metrics.mean import SampleMean
from msa_lightning.metrics.msa import FAMILIES, MSAMetrics, compute_msa_metrics

__all__ = ["FAMILIES", "MSAMetrics", "SampleMean", "compute_msa_metrics"]

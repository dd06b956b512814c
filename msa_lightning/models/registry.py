"""Imports every model so LightningCLI can resolve them by class name (``class_path: TFNModule``)."""
from msa_lightning.models.base import MSARegressionModule
from msa_lightning.models.baselines import BertLSTMModule, LFDNNModule, TFNModule
from msa_lightning.models.hybrid_shift import HybridShiftModule

MODELS = {cls.__name__: cls for cls in (LFDNNModule, TFNModule, BertLSTMModule, HybridShiftModule)}

__all__ = ["MODELS", "MSARegressionModule", *MODELS]

"""Imports every model so LightningCLI can resolve them by class name (``class_path: TFNModule``)."""
from msa_lightning.models.base import MSARegressionModule
from msa_lightning.models.baselines import BertLSTMModule, LFDNNModule, TFNModule
from msa_lightning.models.hybrid_shift import HybridShiftModule
from msa_lightning.models.swrm import SelfMMModule, SWRMModule

MODELS = {cls.__name__: cls for cls in (LFDNNModule, TFNModule, BertLSTMModule, SelfMMModule, SWRMModule, HybridShiftModule)}

__all__ = ["MODELS", "MSARegressionModule", *MODELS]

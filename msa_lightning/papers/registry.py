"""Imports every model so LightningCLI can resolve them by class name (``class_path: TFNModule``)."""
from msa_lightning.training.module import MSARegressionModule
from msa_lightning.papers.baselines.module import BertLSTMModule, LFDNNModule, TFNModule
from msa_lightning.papers.fmlmsn.module import FmlMSNMeta, FmlMSNStage  # noqa: F401  (FmlMSN, issue 10)
from msa_lightning.papers.hybrid_shift.module import HybridShiftModule
from msa_lightning.papers.skesl.module import SKESLModule, SKESLPretrain  # noqa: F401  (SKESL, issue 8)
from msa_lightning.papers.swrm.module import SelfMMModule, SWRMModule
from msa_lightning.papers.twostep.module import TwoStepMSA  # noqa: F401  (TwoStepMSA, issue 9)

__all__ = ["MSARegressionModule", "LFDNNModule", "TFNModule", "BertLSTMModule", "SelfMMModule", "SWRMModule",
           "HybridShiftModule"]

"""Every model and DataModule of the suite, imported so LightningCLI resolves them by class name
(``class_path: TFNModule``, ``--data=MOSIDataModule``). A new paper adds its module and DataModules here."""

from msa_lightning.data.datamodule import (
    MOSEIDataModule,
    MOSIDataModule,
    MSADataModule,
    SIMSDataModule,
)
from msa_lightning.data.raw import RawMediaDataModule
from msa_lightning.papers.baselines.module import BertLSTMModule, LFDNNModule, MAGBERTModule, TFNModule
from msa_lightning.papers.fmlmsn.data import (
    StageFeaturesDataModule,
    TextFeaturesDataModule,
)
from msa_lightning.papers.fmlmsn.module import FmlMSNMeta, FmlMSNStage
from msa_lightning.papers.hybrid_shift.module import HybridShiftModule
from msa_lightning.papers.skesl.data import (
    SKESLCorpusDataModule,
    SKESLMaskedDataModule,
    SKESLStreamDataModule,
)
from msa_lightning.papers.skesl.module import SKESLModule, SKESLPretrain
from msa_lightning.papers.swrm.data import MOSIASRDataModule
from msa_lightning.papers.swrm.module import SelfMMModule, SWRMModule
from msa_lightning.papers.twostep.data import ExtractedFeaturesDataModule
from msa_lightning.papers.twostep.module import TwoStepMSA
from msa_lightning.training.module import MSARegressionModule

MODELS = (
    LFDNNModule,
    TFNModule,
    BertLSTMModule,
    MAGBERTModule,
    SelfMMModule,
    SWRMModule,
    HybridShiftModule,
    SKESLPretrain,
    SKESLModule,
    FmlMSNStage,
    FmlMSNMeta,
    TwoStepMSA,
)
DATAMODULES = (
    MSADataModule,
    MOSIDataModule,
    MOSEIDataModule,
    SIMSDataModule,
    MOSIASRDataModule,
    RawMediaDataModule,
    ExtractedFeaturesDataModule,
    StageFeaturesDataModule,
    TextFeaturesDataModule,
    SKESLMaskedDataModule,
    SKESLCorpusDataModule,
    SKESLStreamDataModule,
)

__all__ = ["MODELS", "DATAMODULES", "MSARegressionModule", *(c.__name__ for c in MODELS + DATAMODULES)]

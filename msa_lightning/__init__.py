"""msa_lightning: PyTorch Lightning experiment suite for multimodal sentiment analysis."""

from msa_lightning import deprecated as _deprecated

__version__ = "0.2.0"

_deprecated.install()  # the import paths of release 0.1 keep working, with a warning, until 0.3

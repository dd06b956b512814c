"""msa_lightning: PyTorch Lightning experiment suite for multimodal sentiment analysis."""
__version__ = "0.1.0"

"""caer_export: CLIP-CAER in PyTorch, checkpoint loading, training, ONNX bundle export."""

__version__ = "0.1.0"

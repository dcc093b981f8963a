"""vseg: efficient video segmentation from training to TensorRT on NVIDIA GPUs."""

__version__ = "0.1.0"

"""Training for the VOS models: clip sampling, the training loop (stm, and lite by online
distillation), checkpoints and validation J&F."""

from vseg.train.config import TrainConfig, TrainResult
from vseg.train.validate import validate_vos
from vseg.train.vos import train_vos
from vseg.train.vos_data import VOSClipDataset

__all__ = ["TrainConfig", "TrainResult", "VOSClipDataset", "train_vos", "validate_vos"]

"""Training: data sets, the trainer, checkpoints."""

from ndsnn_triton.train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from ndsnn_triton.train.data import (
    DATASETS,
    BatchLoader,
    DataError,
    DataSet,
    ImageSplit,
    load_dataset,
)
from ndsnn_triton.train.trainer import TrainConfig, Trainer

__all__ = [
    "DATASETS",
    "BatchLoader",
    "CheckpointError",
    "DataError",
    "DataSet",
    "ImageSplit",
    "TrainConfig",
    "Trainer",
    "load_checkpoint",
    "load_dataset",
    "save_checkpoint",
]

"""Datasets: MNIST-format torchvision datasets as seeded, preprocessed tensors."""

from bn_compare.data.datamodule import (
    DataError,
    EpochBatchSampler,
    MNISTDataModule,
    load_split,
    preprocess,
    required_files,
)

__all__ = [
    "DataError",
    "EpochBatchSampler",
    "MNISTDataModule",
    "load_split",
    "preprocess",
    "required_files",
]

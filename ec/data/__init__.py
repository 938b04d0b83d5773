"""Datasets for the image experiments (torchvision when installed, offline sources otherwise)
and the input masks used before clustering."""

from .images import (
    DATASET_NAMES,
    DatasetUnavailable,
    ImageDataset,
    default_data_dir,
    load_dataset,
    torchvision_available,
)
from .masks import MASK_METHODS, boruta_mask, importance_mask, pixel_mask, variance_mask

__all__ = [
    "DATASET_NAMES",
    "MASK_METHODS",
    "DatasetUnavailable",
    "ImageDataset",
    "boruta_mask",
    "default_data_dir",
    "importance_mask",
    "load_dataset",
    "pixel_mask",
    "torchvision_available",
    "variance_mask",
]

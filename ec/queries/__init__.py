"""Queries: the inputs a teacher is asked about, and the answers that train the students.

- :mod:`.uniform`: uniform inputs on ``[-sqrt 3, sqrt 3]^d`` for synthetic teachers
  (:func:`uniform_dataset`, :class:`Dataset`).
- :mod:`.datasets` (with :mod:`.idx`): image datasets (MNIST, Fashion-MNIST, CIFAR-10,
  scikit-learn's digits) from torchvision when installed, offline sources otherwise.
- :mod:`.masks`: which inputs (pixels) are informative, used before clustering.
"""

from .datasets import (
    DATASET_NAMES,
    DatasetUnavailable,
    ImageDataset,
    default_data_dir,
    load_dataset,
    torchvision_available,
)
from .masks import MASK_METHODS, boruta_mask, importance_mask, pixel_mask, variance_mask
from .uniform import INPUT_HALF_WIDTH, Dataset, uniform_dataset, uniform_inputs

__all__ = [
    "DATASET_NAMES",
    "INPUT_HALF_WIDTH",
    "MASK_METHODS",
    "Dataset",
    "DatasetUnavailable",
    "ImageDataset",
    "boruta_mask",
    "default_data_dir",
    "importance_mask",
    "load_dataset",
    "pixel_mask",
    "torchvision_available",
    "uniform_dataset",
    "uniform_inputs",
    "variance_mask",
]

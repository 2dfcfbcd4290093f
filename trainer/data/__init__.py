"""Image datasets for the CNN child, held in memory as uint8 tensors.

    train, val, info = load_dataset("cifar10", path="/data/cifar-10-batches-py",
                                    validation_size=5000, seed=0)

``split="search"`` (the default, what every search trial uses) returns the training set
minus a seeded validation carve-out, and the validation split; the test files are never
opened. ``split="test"`` returns the whole training set and the test set, for the final
evaluation of the chosen architecture only. Normalisation statistics (``info.mean``,
``info.std``) are computed on the returned training split.

The Penn Treebank (``ptb``) is the language-model trainer's and lives in ``data.ptb``.
"""

from __future__ import annotations

import os
from typing import Callable, Optional, Union

import numpy as np

from kubenas.trainer.data.base import (DatasetError, DatasetInfo, ImageSplit, carve_validation,
                                       channel_stats, whole)

__all__ = ["DATASETS", "DatasetError", "DatasetInfo", "ImageSplit", "load_dataset"]


def _digits(path, part):
    from kubenas.trainer.data.digits import read_digits

    if path:
        raise DatasetError("digits: ships with scikit-learn and takes no dataset.path")
    train, test = read_digits()
    return train if part == "train" else test


def _fashion(path, part):
    from kubenas.trainer.data.fashion_mnist import read_fashion_mnist

    return read_fashion_mnist(path, part)


def _cifar(path, part):
    from kubenas.trainer.data.cifar10 import read_cifar10

    return read_cifar10(path, part)


def _names(name, path):
    if name == "cifar10":
        from kubenas.trainer.data.cifar10 import class_names

        return class_names(path)
    if name == "fashion_mnist":
        from kubenas.trainer.data.fashion_mnist import CLASS_NAMES

        return list(CLASS_NAMES)
    return [str(i) for i in range(10)]


# name -> (reader(path, "train"|"test") -> (uint8 N,C,H,W, int64 N), classes, crop pad, flip)
DATASETS: dict[str, tuple[Callable, int, int, bool]] = {
    "digits": (_digits, 10, 1, False),          # 8x8: a 1-pixel shift; digits are not mirrorable
    "fashion_mnist": (_fashion, 10, 4, True),
    "cifar10": (_cifar, 10, 4, True),
}


def load_dataset(name: str, path: Optional[str] = None,
                 validation_size: Union[float, int] = 0.1, seed: int = 0,
                 split: str = "search", store=None,
                 cache_dir: Optional[Union[str, os.PathLike]] = None
                 ) -> tuple[ImageSplit, ImageSplit, DatasetInfo]:
    """(train, val, info) for a search; (full train, test, info) with ``split="test"``.

    ``path``: a local folder, ``s3://...`` or a key prefix in ``store`` (fetched once into
    ``cache_dir``); None means the dataset's default location."""
    if name not in DATASETS:
        raise DatasetError(f"dataset.name: no image dataset {name!r} "
                           f"(known: {', '.join(DATASETS)})")
    if split not in ("search", "test"):
        raise ValueError(f"split must be 'search' or 'test', got {split!r}")
    reader, num_classes, crop, flip = DATASETS[name]
    if path is not None:
        from kubenas.trainer.data.remote import resolve_dataset_path

        path = resolve_dataset_path(path, store, cache_dir)
    images, labels = reader(path, "train")
    if split == "search":
        train, other = carve_validation(images, labels, validation_size, seed)
    else:
        test_images, test_labels = reader(path, "test")
        if test_images.shape[1:] != images.shape[1:]:
            raise DatasetError(f"{name}: test images {test_images.shape[1:]} differ from "
                               f"training images {images.shape[1:]}")
        train, other = whole(images, labels), whole(test_images, test_labels)
    if labels.size and int(np.max(labels)) >= num_classes:
        raise DatasetError(f"{name}: label {int(np.max(labels))} >= {num_classes} classes")
    mean, std = channel_stats(train.images)
    info = DatasetInfo(name=name, num_classes=num_classes,
                       input_shape=tuple(int(v) for v in images.shape[1:]), mean=mean, std=std,
                       crop_padding=crop, horizontal_flip=flip, train_size=len(train),
                       val_size=len(other), split=split, source=str(path or ""),
                       class_names=_names(name, path))
    return train, other, info

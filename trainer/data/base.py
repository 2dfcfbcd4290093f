"""In-memory image splits, the validation carve-out and per-channel statistics.

Every image dataset is held as one uint8 tensor (N, C, H, W) plus int64 labels: CIFAR-10's
50,000 training images take 150 MB, and batches are cut and augmented as tensors
(``kubenas.trainer.data.augment``) instead of per-PIL-image transforms.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Union

import numpy as np
import torch


class DatasetError(RuntimeError):
    """The dataset's files are missing or malformed (an environment error, not the trial's)."""


@dataclass
class ImageSplit:
    images: torch.Tensor          # uint8 (N, C, H, W)
    labels: torch.Tensor          # int64 (N,)
    indices: Optional[torch.Tensor] = None  # positions in the source file order (for audits)

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise DatasetError(f"images must be uint8 NCHW, got {self.images.dtype} "
                               f"{tuple(self.images.shape)}")
        if self.labels.shape != (self.images.shape[0],):
            raise DatasetError(f"{self.images.shape[0]} images but labels of shape "
                               f"{tuple(self.labels.shape)}")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def to(self, device) -> "ImageSplit":
        return ImageSplit(self.images.to(device), self.labels.to(device), self.indices)


@dataclass
class DatasetInfo:
    name: str
    num_classes: int
    input_shape: tuple            # (C, H, W)
    mean: tuple                   # per channel, of the training split, in [0, 1] units
    std: tuple
    crop_padding: int             # the dataset's default augmentation
    horizontal_flip: bool
    train_size: int
    val_size: int
    split: str                    # "search" (train/val) or "test" (full train/test)
    source: str = ""
    class_names: list = field(default_factory=list)


def channel_stats(images: torch.Tensor, chunk: int = 4096) -> tuple[tuple, tuple]:
    """Per-channel mean and std of uint8 NCHW images, in [0, 1] units (float64 sums)."""
    c = images.shape[1]
    s = torch.zeros(c, dtype=torch.float64)
    s2 = torch.zeros(c, dtype=torch.float64)
    for i in range(0, images.shape[0], chunk):
        x = images[i:i + chunk].to(torch.float64).div_(255.0)
        s += x.sum(dim=(0, 2, 3))
        s2 += (x * x).sum(dim=(0, 2, 3))
    n = images.shape[0] * images.shape[2] * images.shape[3]
    mean = s / n
    std = (s2 / n - mean * mean).clamp_min(0).sqrt().clamp_min(1e-3)
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def validation_count(n: int, validation_size: Union[float, int]) -> int:
    """Examples carved out for validation: a fraction in (0, 1) or an absolute count."""
    if isinstance(validation_size, float):
        if not 0 < validation_size < 1:
            raise ValueError(f"validationSize: a fraction must be in (0, 1), got {validation_size}")
        k = int(round(n * validation_size))
    else:
        k = int(validation_size)
    if not 1 <= k < n:
        raise ValueError(f"validationSize: {validation_size!r} leaves {k} of {n} training "
                         f"examples for validation; need 1..{n - 1}")
    return k


def carve_validation(images: np.ndarray, labels: np.ndarray, validation_size, seed: int
                     ) -> tuple[ImageSplit, ImageSplit]:
    """Split the training set into (train, val) with a seeded permutation (disjoint)."""
    n = len(labels)
    k = validation_count(n, validation_size)
    perm = np.random.default_rng(seed).permutation(n)
    val_idx, train_idx = np.sort(perm[:k]), np.sort(perm[k:])
    return _split(images, labels, train_idx), _split(images, labels, val_idx)


def _split(images: np.ndarray, labels: np.ndarray, idx: Optional[np.ndarray]) -> ImageSplit:
    if idx is None:
        idx = np.arange(len(labels))
    return ImageSplit(torch.from_numpy(np.ascontiguousarray(images[idx])),
                      torch.from_numpy(np.asarray(labels[idx], dtype=np.int64)),
                      torch.from_numpy(idx.astype(np.int64)))


def whole(images: np.ndarray, labels: np.ndarray) -> ImageSplit:
    return _split(images, labels, None)

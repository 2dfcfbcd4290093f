"""Standard augmentation, batched on tensors: padded random crop and horizontal flip.

Works on a uint8 (B, C, H, W) batch wherever it lives (CPU or GPU): the batch is
zero-padded once, every image's crop is gathered with one advanced-indexing op, flips are
one ``torch.where``. (torchvision's RandomCrop / RandomHorizontalFlip, given a batch,
draw one crop and one coin for the whole batch, so they would have to run per image.)
Random draws come from a CPU ``torch.Generator`` so that a resumed
run sees the same crops as an uninterrupted one.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F


def to_float(images: torch.Tensor,
             memory_format: torch.memory_format = torch.contiguous_format) -> torch.Tensor:
    """uint8 -> float32 in [0, 1] (what the models take), laid out in ``memory_format``
    with its canonical strides (a 1-channel batch's strides are otherwise ambiguous)."""
    return images.to(torch.float32, memory_format=memory_format).div_(255.0)


def random_crop(images: torch.Tensor, padding: int, generator: Optional[torch.Generator] = None
                ) -> torch.Tensor:
    """Zero-pad by ``padding`` on every side, then crop each image back to H x W at an
    independent uniform offset. The result may be a channels-last view."""
    if padding <= 0:
        return images
    b, _, h, w = images.shape
    padded = F.pad(images, [padding] * 4)
    off = torch.randint(0, 2 * padding + 1, (2, b), generator=generator).to(images.device)
    rows = off[0][:, None] + torch.arange(h, device=images.device)[None, :]      # B, H
    cols = off[1][:, None] + torch.arange(w, device=images.device)[None, :]      # B, W
    batch = torch.arange(b, device=images.device)[:, None, None]
    # (B, C, H', W') -> (B, H', W', C) so the three index tensors broadcast to (B, H, W)
    out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2)


def random_flip(images: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Mirror each image left-right with probability 1/2."""
    mask = torch.rand(images.shape[0], generator=generator) < 0.5
    return torch.where(mask.to(images.device)[:, None, None, None], images.flip(3), images)


class BatchAugment:
    """``augment(uint8 batch, generator, memory_format) -> float batch in [0, 1]``."""

    def __init__(self, crop_padding: int = 0, horizontal_flip: bool = False) -> None:
        self.crop_padding = int(crop_padding)
        self.horizontal_flip = bool(horizontal_flip)

    def __call__(self, images: torch.Tensor, generator: Optional[torch.Generator] = None,
                 memory_format: torch.memory_format = torch.contiguous_format) -> torch.Tensor:
        if self.crop_padding:
            images = random_crop(images, self.crop_padding, generator)
        if self.horizontal_flip:
            images = random_flip(images, generator)
        return to_float(images, memory_format)

    def __repr__(self) -> str:
        return f"BatchAugment(crop_padding={self.crop_padding}, horizontal_flip={self.horizontal_flip})"

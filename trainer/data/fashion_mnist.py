"""Fashion-MNIST from its IDX files (gzipped or not), e.g. Debian's ``dataset-fashion-mnist``
at /usr/share/datasets/fashion-mnist/ (60,000 train / 10,000 test, 28x28 grey, 10 classes).

The IDX reader is our own: torchvision's FashionMNIST wants its own raw/ folder layout.
The test files (t10k-*) are opened only when the test split is asked for.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

from kubenas.trainer.data.base import DatasetError

DEFAULT_PATH = "/usr/share/datasets/fashion-mnist"
CLASS_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
               "Sneaker", "Bag", "Ankle boot"]
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def read_idx(path: str | Path) -> np.ndarray:
    """An IDX file of unsigned bytes (type 0x08), gzipped or not, as an ndarray."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            data = fh.read()
    except (OSError, EOFError) as exc:
        raise DatasetError(f"{path}: cannot read ({exc})") from exc
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DatasetError(f"{path}: not an IDX file (bad magic)")
    if data[2] != 0x08:
        raise DatasetError(f"{path}: IDX element type 0x{data[2]:02x} is not unsigned byte")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DatasetError(f"{path}: truncated IDX header")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    count = int(np.prod(dims)) if dims else 1
    if len(data) - header != count:
        raise DatasetError(f"{path}: header says {dims} ({count} bytes) but "
                           f"{len(data) - header} bytes follow")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def find_folder(path: str | Path | None) -> Path:
    """The folder holding the IDX files: ``path`` itself, or a known subfolder of it."""
    base = Path(path or DEFAULT_PATH)
    for cand in (base, base / "fashion-mnist", base / "FashionMNIST" / "raw"):
        if _find(cand, FILES["train"][0]) is not None:
            return cand
    raise DatasetError(
        f"fashion_mnist: no {FILES['train'][0]}[.gz] under {base} "
        "(install Debian's dataset-fashion-mnist, or set trainer.dataset.path)")


def _find(folder: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):
        if (folder / name).is_file():
            return folder / name
    return None


def read_fashion_mnist(path: str | Path | None, part: str) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 N,1,28,28, labels int64 N) of ``part`` ("train" or "test")."""
    folder = find_folder(path)
    img_stem, lbl_stem = FILES[part]
    img_path, lbl_path = _find(folder, img_stem), _find(folder, lbl_stem)
    if img_path is None or lbl_path is None:
        raise DatasetError(f"fashion_mnist: {img_stem} or {lbl_stem} missing in {folder}")
    images, labels = read_idx(img_path), read_idx(lbl_path)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DatasetError(f"fashion_mnist: {img_path.name} {images.shape} does not match "
                           f"{lbl_path.name} {labels.shape}")
    if labels.size and labels.max() >= len(CLASS_NAMES):
        raise DatasetError(f"fashion_mnist: label {labels.max()} out of range in {lbl_path}")
    return images[:, None, :, :].copy(), labels.astype(np.int64)

"""CIFAR-10 from a user-supplied ``cifar-10-batches-py`` folder in the real pickle format.

torchvision's CIFAR10 checks each file's MD5, which rules out anything but the official
files, so the format is read here: ``data_batch_1`` .. ``data_batch_5`` (train) and
``test_batch`` (test), each a pickled dict with ``b"data"`` (N x 3072 uint8, channel-major
32x32 planes) and ``b"labels"``; ``batches.meta`` (optional) names the classes.
The unpickler only admits numpy's array reconstruction: a dataset fetched from object
storage cannot run code. ``test_batch`` is opened only when the test split is asked for.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from kubenas.trainer.data.base import DatasetError

TRAIN_FILES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_FILES = ["test_batch"]
CLASS_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
               "ship", "truck"]
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("_codecs", "encode"),  # how protocol-2 pickles written by Python 3 carry bytes
}


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a dataset file")


def _load(path: Path) -> dict:
    try:
        with open(path, "rb") as fh:
            return _SafeUnpickler(fh, encoding="bytes").load()
    except (OSError, EOFError, pickle.UnpicklingError, ValueError) as exc:
        raise DatasetError(f"cifar10: cannot read {path}: {exc}") from exc


def find_folder(path: str | Path | None) -> Path:
    if not path:
        raise DatasetError("cifar10: not shipped with kubenas; set trainer.dataset.path to a "
                           "cifar-10-batches-py folder (local, or a key prefix in the store)")
    base = Path(path)
    for cand in (base, base / "cifar-10-batches-py"):
        if (cand / TRAIN_FILES[0]).is_file():
            return cand
    raise DatasetError(f"cifar10: no {TRAIN_FILES[0]} under {base}")


def read_cifar10(path: str | Path | None, part: str) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 N,3,32,32, labels int64 N) of ``part`` ("train" or "test")."""
    folder = find_folder(path)
    images, labels = [], []
    for name in TRAIN_FILES if part == "train" else TEST_FILES:
        f = folder / name
        if not f.is_file():
            raise DatasetError(f"cifar10: {name} missing in {folder}")
        d = _load(f)
        if not isinstance(d, dict) or b"data" not in d or b"labels" not in d:
            raise DatasetError(f"cifar10: {f} is not a CIFAR-10 batch (no data/labels)")
        data = np.asarray(d[b"data"], dtype=np.uint8)
        lab = np.asarray(d[b"labels"], dtype=np.int64)
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(lab):
            raise DatasetError(f"cifar10: {f}: data {data.shape} / labels {lab.shape} are "
                               "not N x 3072 / N")
        if lab.size and (lab.min() < 0 or lab.max() > 9):
            raise DatasetError(f"cifar10: {f}: labels outside 0..9")
        images.append(data.reshape(-1, 3, 32, 32))
        labels.append(lab)
    return np.concatenate(images), np.concatenate(labels)


def class_names(path: str | Path | None) -> list[str]:
    meta = find_folder(path) / "batches.meta"
    if meta.is_file():
        names = _load(meta).get(b"label_names")
        if isinstance(names, list) and len(names) == 10:
            return [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    return list(CLASS_NAMES)

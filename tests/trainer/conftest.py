"""Shared fixtures of the trainer's tests: tiny dataset files in their real formats."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

torch.set_num_threads(1)


def cifar_pixels(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 3072), dtype=np.uint8)


def write_cifar(folder: Path, per_batch: int = 6, test: int = 5, meta: bool = True) -> dict:
    """A ``cifar-10-batches-py`` folder in the real pickle format (protocol 2, byte keys),
    with tiny batches. Returns {file name: (data, labels)} for checking."""
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    names = [f"data_batch_{i}" for i in range(1, 6)] + (["test_batch"] if test else [])
    for k, name in enumerate(names):
        n = test if name == "test_batch" else per_batch
        data = cifar_pixels(n, seed=k)
        labels = [int(v) for v in np.random.default_rng(100 + k).integers(0, 10, size=n)]
        doc = {b"batch_label": name.encode(), b"labels": labels, b"data": data,
               b"filenames": [f"img_{k}_{i}.png".encode() for i in range(n)]}
        (folder / name).write_bytes(pickle.dumps(doc, protocol=2))
        written[name] = (data, labels)
    if meta:
        names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog",
                 b"horse", b"ship", b"truck"]
        (folder / "batches.meta").write_bytes(pickle.dumps(
            {b"num_cases_per_batch": per_batch, b"label_names": names, b"num_vis": 3072},
            protocol=2))
    return written


def write_idx(path: Path, array: np.ndarray, gz: bool = True) -> None:
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.tobytes()
    if gz:
        with gzip.open(str(path) + ".gz", "wb") as fh:
            fh.write(payload)
    else:
        path.write_bytes(payload)


def write_fashion(folder: Path, train: int = 30, test: int = 0, gz: bool = True) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    out = {}
    for part, n in (("train", train), ("t10k", test)):
        if not n:
            continue
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        write_idx(folder / f"{part}-images-idx3-ubyte", images, gz)
        write_idx(folder / f"{part}-labels-idx1-ubyte", labels, gz)
        out[part] = (images, labels)
    return out


def cnn_layer(name, inputs=(), kind="conv", fh=3, fw=3, filters=8, sh=1, sw=1) -> dict:
    d = {"name": name, "type": kind, "inputs": list(inputs), "filter_height": fh,
         "filter_width": fw, "stride_height": sh, "stride_width": sw}
    if kind == "conv":
        d["num_filters"] = filters
    return d


# Test modules get the helpers as fixtures (no cross-directory ``import conftest``).
@pytest.fixture
def cifar_folder_writer():
    return write_cifar


@pytest.fixture
def fashion_folder_writer():
    return write_fashion


@pytest.fixture
def make_layer():
    return cnn_layer


@pytest.fixture
def small_cnn():
    from kubenas.contracts import Architecture

    return Architecture.from_dict({"space": "cnn", "spec": {"layers": [
        cnn_layer("layer_1", filters=16),
        cnn_layer("layer_2", ["layer_1"], filters=16),
        cnn_layer("layer_3", ["layer_1", "layer_2"], filters=16)]}})


@pytest.fixture
def ptb_reads(monkeypatch):
    """The splits each read of the PTB text asks for, in order (the corpus memo cleared, so
    every load reads)."""
    from kubenas.trainer.data import ptb

    asked, real = [], ptb.read_texts

    def spy(*a, **kw):
        asked.append(tuple(kw.get("splits", ptb.SPLITS)))
        return real(*a, **kw)
    monkeypatch.setattr(ptb, "read_texts", spy)
    monkeypatch.setattr(ptb, "_CORPUS_CACHE", {})
    return asked

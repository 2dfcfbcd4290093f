"""The training loop's pieces: schedule, batching, failure sorting; TorchScript export."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from kubenas.contracts import Architecture
from kubenas.trainer.builders.cnn import build_cnn
from kubenas.trainer.config import TrainerConfig
from kubenas.trainer.data.base import ImageSplit
from kubenas.trainer.errors import OutOfMemory, TrainingError
from kubenas.trainer.export import export_torchscript
from kubenas.trainer.train import batch_starts, fit, lr_at


def _split(n, c=1, hw=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return ImageSplit(torch.randint(0, 256, (n, c, hw, hw), dtype=torch.uint8, generator=g),
                      torch.randint(0, 10, (n,), generator=g))


def test_learning_rate_schedules():
    cos = TrainerConfig.from_dict({"epochs": 10})
    assert lr_at(cos, 0, 100, 0) == pytest.approx(0.1)
    assert lr_at(cos, 50, 100, 5) == pytest.approx(0.05)
    assert lr_at(cos, 99, 100, 9) == pytest.approx(0.05 * (1 + math.cos(math.pi * 0.99)))
    step = TrainerConfig.from_dict({"epochs": 10, "lrSchedule": "step"})
    assert [round(lr_at(step, 0, 100, e), 6) for e in (0, 4, 5, 7, 8, 9)] == \
        [0.1, 0.1, 0.01, 0.01, 0.001, 0.001]
    const = TrainerConfig.from_dict({"lrSchedule": "constant", "learningRate": 0.05})
    assert lr_at(const, 77, 100, 3) == 0.05


def test_batches_cover_every_example_but_never_leave_a_batch_of_one():
    assert batch_starts(10, 4) == [0, 4, 8]
    assert batch_starts(9, 4) == [0, 4]  # the last batch takes 4..8
    assert batch_starts(1, 4) == [0]


class Failing(nn.Module):
    def __init__(self, exc):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))
        self.exc = exc

    def forward(self, x):
        raise self.exc


def test_failures_in_the_first_step_are_the_architectures():
    cfg = TrainerConfig.from_dict({"epochs": 1, "batchSize": 4})
    with pytest.raises(TrainingError, match="first training step failed: RuntimeError: shapes"):
        fit(Failing(RuntimeError("shapes cannot be multiplied")), _split(8), _split(4), cfg)
    with pytest.raises(OutOfMemory, match=r"epoch 1: RuntimeError: .*can't allocate memory"):
        fit(Failing(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to "
                                 "allocate 10 GB")), _split(8), _split(4), cfg)


def test_fit_records_metrics_and_calls_back_after_every_epoch():
    arch = Architecture.from_dict({"space": "cnn", "spec": {"layers": [
        {"name": "a", "filter_height": 3, "filter_width": 3, "num_filters": 4}]}})
    model = build_cnn(arch, (1, 8, 8), 10)
    states = []
    cfg = TrainerConfig.from_dict({"epochs": 3, "batchSize": 8})
    metrics = fit(model, _split(24), _split(8, seed=1), cfg, on_epoch=states.append)
    assert [m.epoch for m in metrics] == [1, 2, 3]
    assert [s["epoch"] for s in states] == [1, 2, 3]
    assert [m["epoch"] for m in states[-1]["metrics"]] == [1, 2, 3]
    assert set(states[0]) >= {"model", "optimizer", "metrics", "epoch"}
    assert metrics[-1].extra["lr"] < 0.1 and metrics[-1].extra["images_per_second"] > 0


def test_torchscript_export_runs_and_matches_the_eager_model(tmp_path, make_layer):
    arch = Architecture.from_dict({"space": "cnn", "spec": {"layers": [
        make_layer("a", filters=6, fh=3, fw=5, sh=2, sw=1),
        make_layer("p", ["input"], kind="maxpool", fh=2, fw=2, sh=2, sw=2),
        make_layer("b", ["a", "p"], filters=5, fh=1, fw=7),
        make_layer("q", ["b"], kind="avgpool", fh=3, fw=3, sh=3, sw=3),
        make_layer("c", ["input"], filters=4, fh=7, fw=1)]}})
    model = build_cnn(arch, (3, 11, 13), 10, mean=[0.4, 0.5, 0.6], std=[0.2, 0.25, 0.3])
    model.train()
    for _ in range(2):  # move the batch-norm statistics away from their defaults
        model(torch.rand(8, 3, 11, 13))
    path = tmp_path / "best_model.pt"
    export_torchscript(model, torch.rand(2, 3, 11, 13), path)
    assert model.training  # the caller's model is left as it was
    loaded = torch.jit.load(str(path))
    x = torch.rand(5, 3, 11, 13)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=1e-5, atol=1e-5)

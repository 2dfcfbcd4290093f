"""The final retrain child (kubenas.trainer.final): trains on train+validation, evaluates
the test split exactly once (recorded), exports TorchScript and ONNX; real digits training."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch

from kubenas.contracts import ResultRecord
from kubenas.storage.local import LocalStore
from kubenas.trainer import child
from kubenas.trainer import data as data_module
from kubenas.trainer.child import train_child
from kubenas.trainer.train import lr_at
from kubenas.trainer.config import TrainerConfig

TRAINER = {"dataset": {"name": "digits"}, "epochs": 2, "batchSize": 64, "learningRate": 0.05,
           "numThreads": 1, "bnEpsilon": 1e-3, "lrDecayEpoch": 1}


def _spy(monkeypatch):
    splits = []
    real = data_module.load_dataset

    def spy(*a, **kw):
        splits.append(kw.get("split", "search"))
        return real(*a, **kw)
    monkeypatch.setattr(data_module, "load_dataset", spy)
    monkeypatch.setattr(child, "load_dataset", spy)
    return splits


def test_final_run_tests_once_and_exports_torchscript_and_onnx(tmp_path, small_cnn, monkeypatch):
    splits = _spy(monkeypatch)
    store = LocalStore(tmp_path)
    cfg = dict(TRAINER, finalRun={"trainOn": "train+validation"})
    rec = train_child("e-f0000", "e", small_cnn, cfg, store)
    assert rec.succeeded, rec.reason
    test = rec.extra["test"]
    assert test["split"] == "test" and test["evaluations"] == 1 and test["examples"] == 297
    assert 0.3 < test["accuracy"] <= 1.0
    assert splits == ["search", "test"]
    assert rec.extra["train_size"] == 1500 and rec.extra["validationInTraining"] is True
    stored = ResultRecord.from_json(store.get("results/e-f0000.json"))
    assert stored.extra["test"] == test
    assert json.loads(store.get("final/test-evaluations/e-f0000.json")) == test
    # a second run of the same trial trains and tests nothing (the record is there)
    assert train_child("e-f0000", "e", small_cnn, cfg, store).extra["test"] == test
    assert splits == ["search", "test"]
    # the exported models give the same logits
    scripted = torch.jit.load(io.BytesIO(store.get("models/e-f0000.pt")))
    x = torch.rand(3, 1, 8, 8)
    want = scripted(x).detach().numpy()
    ort = pytest.importorskip("onnxruntime")
    sess = ort.InferenceSession(store.get(rec.extra["onnx_key"]),
                                providers=["CPUExecutionProvider"])
    got = sess.run(None, {"images": x.numpy()})[0]
    assert np.allclose(got, want, atol=1e-4)


def test_a_search_style_trial_never_reads_the_test_split(tmp_path, small_cnn, monkeypatch):
    splits = _spy(monkeypatch)
    rec = train_child("e-00000", "e", small_cnn, dict(TRAINER, epochs=1), LocalStore(tmp_path))
    assert rec.succeeded and "test" not in rec.extra and splits == ["search"]


def test_lr_decay_epoch_and_bn_epsilon_and_width(small_cnn):
    cfg = TrainerConfig.from_dict({"epochs": 4, "lrSchedule": "constant", "lrDecayEpoch": 2})
    assert [lr_at(cfg, 0, 4, e) for e in range(4)] == pytest.approx([0.1, 0.1, 0.01, 0.01])
    from kubenas.trainer.builders.cnn import build_cnn

    m = build_cnn(small_cnn, (1, 8, 8), 10, bn_epsilon=1e-3, width_multiplier=2)
    bns = [x for x in m.modules() if isinstance(x, torch.nn.BatchNorm2d)]
    assert bns and all(b.eps == 1e-3 and b.num_features == 32 for b in bns)


def _test_split_reads():
    """(file, line) of every call in the package that asks for a test split: a keyword
    ``split="test"`` or ``include_test=True``, or a call of ``evaluate_test``."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    found = []
    for folder in ("kubenas", "controller", "trainer", "operator"):
        for path in sorted((root / folder).rglob("*.py")):
            if path.is_symlink() or any(p.is_symlink() for p in path.parents if root in p.parents):
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if not isinstance(node, ast.Call):
                    continue
                name = getattr(node.func, "attr", getattr(node.func, "id", ""))
                kws = {k.arg: getattr(k.value, "value", None) for k in node.keywords}
                if kws.get("split") == "test" or kws.get("include_test") is True \
                        or name == "evaluate_test":
                    found.append(f"{path.relative_to(root)}:{node.lineno}")
    return found


def test_only_the_final_retrain_reads_the_test_split():
    reads = _test_split_reads()
    # trainer/final.py: the final retrain's one evaluation (an image child's, a language
    # model's through evaluate_test); trainer/lm_child.py: evaluate_test's own read
    assert [r.split(":")[0] for r in reads] == ["trainer/final.py"] * 2 + ["trainer/lm_child.py"], reads


@pytest.mark.filterwarnings("ignore:`torch.jit")
def test_a_language_models_final_run_tests_perplexity_once(tmp_path, ptb_reads):
    from kubenas.trainer.builders.rnn_cell import lstm_cell
    from kubenas.trainer.data import ptb

    asked = ptb_reads
    store = LocalStore(tmp_path)
    cfg = {"dataset": {"name": "ptb"}, "epochs": 2, "embeddingSize": 16, "hiddenSize": 16,
           "batchSize": 10, "bptt": 10, "maxTokens": 2000, "maxEvalTokens": 1000,
           "numThreads": 1, "lrDecayEpoch": 1, "finalRun": {"trainOn": "train+validation"}}
    rec = train_child("p-f0000", "p", lstm_cell().to_dict(), cfg, store)
    assert rec.succeeded, rec.reason
    test = rec.extra["test"]
    assert (test["split"], test["evaluations"], test["metric"], test["dataset"]) == \
        ("test", 1, "perplexity", "ptb")
    assert 1 < test["perplexity"] < 10_000 and test["examples"] > 80_000   # the whole test split
    assert rec.extra["validationInTraining"] is True and rec.extra["model_key"] == "models/p-f0000.pt"
    assert json.loads(store.get("final/test-evaluations/p-f0000.json")) == test
    assert [s for s in asked if "test" in s] == [ptb.SPLITS]     # read once, by the evaluation
    # lrDecayEpoch 1: the rate is divided after every epoch from epoch 1 on, improving or not
    assert [m.extra["lr"] for m in rec.metrics] == [20.0, 5.0]
    assert train_child("p-f0000", "p", lstm_cell().to_dict(), cfg, store).extra["test"] == test

"""The embedded run end to end: real children as processes, a kill, a resume, the outputs."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from kubenas.controller.loop import read_ledger
from kubenas.storage.local import LocalStore

pytestmark = pytest.mark.slow

EXPERIMENT = {
    "apiVersion": "kubenas.dev/v1", "kind": "Experiment", "metadata": {"name": "tiny"},
    "spec": {
        "search": {"space": "cnn", "strategy": "reinforce", "seed": 1,
                   "spaceOptions": {"filterHeights": [1, 3], "filterWidths": [1, 3],
                                    "numFilters": [4, 8],
                                    "curriculum": {"startLayers": 2, "stepLayers": 1,
                                                   "everySamples": 4, "maxLayers": 3}}},
        "budget": {"maxTrials": 6},
        "parallelism": 2,
        "trainer": {"dataset": {"name": "digits"}, "epochs": 2, "batchSize": 128,
                    "rewardWindow": 2},
    },
}


def _run(exp_file: Path, workdir: Path, **kw) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-m", "kubenas", "run", str(exp_file), "--workdir",
                             str(workdir), "--no-progress"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kw)


def _results(workdir: Path) -> dict[str, bytes]:
    d = workdir / "store" / "results"
    return {p.name: p.read_bytes() for p in d.glob("*.json")} if d.exists() else {}


def test_run_is_killed_and_resumes_without_retraining_or_double_counting(tmp_path):
    exp_file = tmp_path / "tiny.yaml"
    exp_file.write_text(yaml.safe_dump(EXPERIMENT))
    workdir = tmp_path / "work"

    first = _run(exp_file, workdir)
    deadline = time.monotonic() + 240
    while len(_results(workdir)) < 2:
        assert first.poll() is None, first.stdout.read()
        assert time.monotonic() < deadline, "no results within 240 s"
        time.sleep(0.2)
    first.send_signal(signal.SIGKILL)
    first.wait()
    before = _results(workdir)
    logs_before = {p.parent.name: p.stat().st_size for p in (workdir / "trials").glob("*/child.log")}
    assert 2 <= len(before) < 6

    second = _run(exp_file, workdir)
    out, _ = second.communicate(timeout=400)
    assert second.returncode == 0, out
    assert "resuming tiny" in out

    after = _results(workdir)
    assert len(after) == 6
    for name, data in before.items():  # a finished trial is never retrained or rewritten
        assert after[name] == data
        tid = name[: -len(".json")]
        assert (workdir / "trials" / tid / "child.log").stat().st_size == logs_before[tid]

    state = read_ledger(LocalStore(workdir / "store"))
    assert sorted(state["applied"]) == sorted(n[:-5] for n in after)
    assert len(state["sampled"]) == 6  # resumed trials kept their ids, none re-sampled

    rows = list(csv.DictReader(open(workdir / "leaderboard.csv")))
    assert len(rows) == 6 and rows[0]["rank"] == "1"
    best = json.loads((workdir / "best_architecture.json").read_text())
    assert best["trial_id"] == rows[0]["trial_id"] and best["space"] == "cnn"
    assert (workdir / "rewards.png").stat().st_size > 1000

    import torch

    model = torch.jit.load(str(workdir / "best_model.pt"))
    logits = model(torch.zeros(3, 1, 8, 8))
    assert logits.shape == (3, 10)


def test_bad_experiment_file_starts_nothing(tmp_path):
    doc = json.loads(json.dumps(EXPERIMENT))
    doc["spec"]["search"]["strategyOptions"] = {"lerningRate": 0.1}
    exp_file = tmp_path / "bad.yaml"
    exp_file.write_text(yaml.safe_dump(doc))
    proc = _run(exp_file, tmp_path / "work")
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 2
    assert "spec.search.strategyOptions.lerningRate: unknown option" in out and "error" in out
    assert not (tmp_path / "work" / "store").exists()

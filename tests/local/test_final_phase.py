"""The final phase end to end (issue 12): `kubenas run` with spec.final trains the grid
points and the retrain as real child processes on digits, tests once, writes final.json,
final_model.pt and final_model.onnx; the policy is never updated; a second run re-trains
nothing and counts nothing twice."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

pytestmark = pytest.mark.slow

# Three 2-layer children of 2 epochs on digits; the final phase: 2 grid points, 1 retrain.
SEARCH = yaml.safe_load("""
apiVersion: kubenas.dev/v1
kind: Experiment
metadata: {name: tinyfinal}
spec:
  search:
    space: cnn
    seed: 1
    spaceOptions:
      filterHeights: [1, 3]
      filterWidths: [1, 3]
      numFilters: [4, 8]
      curriculum: {startLayers: 2, stepLayers: 1, everySamples: 4, maxLayers: 2}
  budget: {maxTrials: 3}
  parallelism: 2
  trainer: {dataset: {name: digits}, epochs: 2, batchSize: 128, rewardWindow: 2}
""")
FINAL = {"grid": {"learningRate": [0.05, 0.2], "lrDecayEpoch": [1]}, "epochs": 4}


def _run(doc: dict, tmp_path: Path, workdir: Path) -> str:
    exp_file = tmp_path / "exp.yaml"
    exp_file.write_text(yaml.safe_dump(doc))
    out = subprocess.run([sys.executable, "-m", "kubenas", "run", str(exp_file), "--workdir",
                          str(workdir), "--no-progress"], env=dict(os.environ, OMP_NUM_THREADS="1"),
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def test_final_phase_grid_retrain_test_once_outputs_and_resume(tmp_path):
    workdir = tmp_path / "work"
    _run(SEARCH, tmp_path, workdir)
    store = workdir / "store"
    state_before = (store / "controller" / "state.json").read_bytes()
    doc = copy.deepcopy(SEARCH)
    doc["spec"]["final"] = FINAL
    stdout = _run(doc, tmp_path, workdir)
    assert "final: test accuracy" in stdout and "evaluated once" in stdout

    # the policy (the whole controller state) is untouched by the final phase
    assert (store / "controller" / "state.json").read_bytes() == state_before
    final = json.loads((workdir / "final.json").read_text())
    assert [g["point"] for g in final["grid"]] == [{"learningRate": 0.05, "lrDecayEpoch": 1},
                                                   {"learningRate": 0.2, "lrDecayEpoch": 1}]
    assert all(g["status"] == "succeeded" for g in final["grid"])
    chosen = max(final["grid"], key=lambda g: g["reward"])
    assert final["chosenGridPoint"]["trial"] == chosen["trial"]
    # the decay epoch scales with the schedule: epoch 1 of 2 -> epoch 2 of 4
    assert final["hyperparameters"] == {"learningRate": chosen["point"]["learningRate"],
                                        "lrDecayEpoch": 2, "epochs": 4, "saveModel": True}
    assert final["test"]["split"] == "test" and final["test"]["evaluations"] == 1
    assert final["test"]["examples"] == 297 and 0 < final["test"]["accuracy"] <= 1
    assert final["parameters"] > 0 and final["trainingSeconds"] > 0
    assert final["cost"]["final"]["trials"] == 3 and final["cost"]["search"]["trials"] == 3

    # exactly one record evaluated the test split: the retrain's
    records = {p.stem: json.loads(p.read_text()) for p in (store / "results").glob("*.json")}
    assert sorted(records) == ["tinyfinal-00000", "tinyfinal-00001", "tinyfinal-00002",
                               "tinyfinal-f0000", "tinyfinal-g0000", "tinyfinal-g0001"]
    assert [t for t, r in records.items() if "test" in r["extra"]] == ["tinyfinal-f0000"]
    assert len(list((store / "final" / "test-evaluations").iterdir())) == 1
    trainer = json.loads((workdir / "trials" / "tinyfinal-f0000" / "trainer.json").read_text())
    assert trainer["finalRun"] == {"trainOn": "train+validation"} and trainer["epochs"] == 4
    # the search's leaderboard lists the search trials only; the report has the final phase
    assert (workdir / "leaderboard.csv").read_text().count("tinyfinal-") == 3
    page = (workdir / "report.html").read_text()
    for section in ("final-grid", "final-retrain", "cost-by-phase"):
        table = page.split(f'id="{section}"')[1].split("</table>")[0]
        rows = {"final-grid": 2, "final-retrain": 1, "cost-by-phase": 3}[section]
        assert table.count("<tr>") == rows + 1, (section, table)   # + the header row
    assert f"{final['test']['accuracy']:.4f} (final model, evaluated once)" in page

    # the exported models run and agree
    x = torch.rand(4, 1, 8, 8)
    want = torch.jit.load(str(workdir / "final_model.pt"))(x).detach().numpy()
    ort = pytest.importorskip("onnxruntime")
    sess = ort.InferenceSession(str(workdir / "final_model.onnx"),
                                providers=["CPUExecutionProvider"])
    assert np.allclose(sess.run(None, {"images": x.numpy()})[0], want, atol=1e-4)

    # again: nothing is trained twice, nothing counted twice, the same answer
    before = {p.name: p.stat().st_mtime_ns for p in (store / "results").glob("*.json")}
    _run(doc, tmp_path, workdir)
    again = json.loads((workdir / "final.json").read_text())
    assert {p.name: p.stat().st_mtime_ns for p in (store / "results").glob("*.json")} == before
    assert again["test"] == final["test"] and again["cost"]["final"] == final["cost"]["final"]


# Two tiny recurrent-cell children on a slice of PTB, then the final phase of §4.2: one grid
# point, the chosen setting retrained at two sizes, each tested once (perplexity).
PTB = yaml.safe_load("""
apiVersion: kubenas.dev/v1
kind: Experiment
metadata: {name: tinyptb}
spec:
  search: {space: rnn_cell, seed: 0, spaceOptions: {base: 2}}
  budget: {maxTrials: 2}
  parallelism: 2
  trainer: {dataset: {name: ptb}, epochs: 1, batchSize: 10, bptt: 10, embeddingSize: 16,
            hiddenSize: 16, maxTokens: 2000, maxEvalTokens: 1000, numThreads: 1}
  final:
    grid: {learningRate: [20]}
    epochs: 2
    sizes: [16, 24]
""")


def test_a_ptb_search_ends_with_its_best_cell_retrained_at_each_size_and_tested_once(tmp_path):
    workdir = tmp_path / "ptb"
    stdout = _run(PTB, tmp_path, workdir)
    assert "final: test perplexity" in stdout and "evaluated once" in stdout, stdout
    final = json.loads((workdir / "final.json").read_text())
    assert [r["size"] for r in final["retrains"]] == [16, 24]
    assert all(r["status"] == "succeeded" and r["test"]["metric"] == "perplexity"
               and r["test"]["evaluations"] == 1 for r in final["retrains"]), final["retrains"]
    assert [r["settings"]["hiddenSize"] for r in final["retrains"]] == [16, 24]
    # the larger model is the one shipped, and its parameter count says so
    small, large = final["retrains"]
    assert final["model"]["trial"] == large["trial"] and large["parameters"] > small["parameters"]
    assert final["test"] == large["test"] and 1 < final["test"]["perplexity"] < 10_000
    assert len(list((workdir / "store" / "final" / "test-evaluations").iterdir())) == 2
    assert (workdir / "final_model.pt").stat().st_size > 0
    assert 'id="final-retrain"' in (workdir / "report.html").read_text()

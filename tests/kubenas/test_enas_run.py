"""`kubenas run` with strategy enas: one process, the derived architecture and the outputs
written (work dir and store), a second run resumes from the checkpoint instead of
starting over; examples/enas-fashion.yaml is a valid experiment."""

import json
from pathlib import Path

import yaml

from kubenas.cli import main
from kubenas.contracts import Architecture

REPO = Path(__file__).resolve().parents[2]
DOC = {"apiVersion": "kubenas.dev/v1", "kind": "Experiment", "metadata": {"name": "enas-digits"},
       "spec": {"search": {"space": "enas_macro", "strategy": "enas",
                           "spaceOptions": {"layers": 2, "channels": 8, "poolingAt": [1],
                                            "ops": ["conv3x3", "maxpool3x3"]},
                           "strategyOptions": {"controllerSteps": 3, "deriveSamples": 2}},
                "budget": {"maxTrials": 100},
                "trainer": {"dataset": {"name": "digits"}, "epochs": 1, "batchSize": 128,
                            "device": "cpu"}}}


def test_run_writes_the_derived_architecture_and_resumes(tmp_path, capsys):
    path = tmp_path / "enas.yaml"
    path.write_text(yaml.safe_dump(DOC))
    work = tmp_path / "work"
    assert main(["run", str(path), "--workdir", str(work), "--no-progress"]) == 0
    arch = Architecture.from_dict(json.loads((work / "best_architecture.json").read_text()))
    assert arch.space == "enas_macro" and len(arch.spec["layers"]) == 2
    summary = json.loads((work / "enas_summary.json").read_text())
    assert summary["policy_samples"] == 3 and summary["epochs"] == 1
    assert (work / "store" / "outputs" / "best_architecture.json").exists()
    assert len((work / "leaderboard.csv").read_text().splitlines()) == 1 + 2
    assert not (work / "trials").exists()  # no children
    out = capsys.readouterr().out
    assert "op_histogram" in out and "CPU-seconds" in out

    # The same command again: the checkpoint says the loop is done; nothing is retrained.
    assert main(["run", str(path), "--workdir", str(work), "--no-progress"]) == 0
    assert "resuming enas-digits: epoch 1" in capsys.readouterr().out
    again = json.loads((work / "enas_summary.json").read_text())
    assert again["policy_samples"] == 3 and again["history"] == summary["history"]


def test_the_enas_examples_are_valid():
    assert main(["run", str(REPO / "examples" / "enas-fashion.yaml"), "--dry-run"]) == 0
    assert main(["run", str(REPO / "examples" / "enas-ptb.yaml"), "--dry-run"]) == 0


def test_an_enas_search_with_a_final_phase_retrains_its_derived_architecture(tmp_path, capsys):
    """spec.final after enas: the derived architecture, as a standalone network, is grid
    searched and retrained by the normal child trainer (child processes), tested once."""
    doc = json.loads(json.dumps(DOC))
    doc["metadata"]["name"] = "enas-final"
    doc["spec"]["final"] = {"grid": {"learningRate": [0.05, 0.1]}, "epochs": 2}
    path = tmp_path / "enas.yaml"
    path.write_text(yaml.safe_dump(doc))
    work = tmp_path / "work"
    assert main(["run", str(path), "--workdir", str(work), "--no-progress"]) == 0
    assert "final: test accuracy" in capsys.readouterr().out
    derived = json.loads((work / "best_architecture.json").read_text())
    final = json.loads((work / "final.json").read_text())
    assert final["architecture"] == derived and final["searchTrial"] == "enas-final-derived"
    assert [g["status"] for g in final["grid"]] == ["succeeded"] * 2
    assert final["test"]["evaluations"] == 1 and 0 < final["test"]["accuracy"] <= 1
    assert final["parameters"] > 0 and (work / "final_model.pt").stat().st_size > 0
    assert (work / "store" / "outputs" / "final.json").exists()
    assert final["cost"]["search"]["trials"] == 0 and final["cost"]["final"]["trials"] == 3

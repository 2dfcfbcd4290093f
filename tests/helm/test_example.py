"""examples/experiment.yaml is a valid Experiment for a two-pool cluster (docs/deploy.md)."""

from __future__ import annotations

from pathlib import Path

import yaml

from kubenas.controller.spaces import make_space
from kubenas.experiment import load_experiment
from kubenas.trainer.config import TrainerConfig

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "experiment.yaml"


def test_example_experiment_is_valid():
    exp = load_experiment(EXAMPLE)
    make_space(exp.space, exp.space_options)          # the space accepts its options
    cfg = TrainerConfig.from_dict(exp.trainer, where="spec.trainer")
    assert cfg.dataset.name == "digits" and cfg.epochs <= 5
    assert cfg.save_model, "docs/deploy.md promises outputs/best_model.pt"
    assert 8 <= exp.max_trials <= 16


def test_example_uses_two_labelled_pools_and_s3_with_a_secret():
    exp = load_experiment(EXAMPLE)
    assert [(p.name, p.node_selector) for p in exp.worker_pools] == [
        ("pool-a", {"kubenas.dev/pool": "pool-a"}), ("pool-b", {"kubenas.dev/pool": "pool-b"})]
    assert "url" not in exp.storage, "the chart's default gives it its own prefix"
    assert exp.storage["secretName"] == "kubenas-s3"
    doc = yaml.safe_load(EXAMPLE.read_text())
    assert doc["apiVersion"] == "kubenas.dev/v1" and doc["kind"] == "Experiment"
    assert "namespace" not in doc["metadata"], "kubectl -n NS apply places it"


def test_example_in_a_cluster_stores_under_its_own_prefix():
    from kubenas.operator.settings import Settings
    from kubenas.operator.validation import parse_experiment_object

    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["metadata"].update(namespace="kubenas", uid="0a1b2c3d-0000-4000-8000-000000000001")
    chart = Settings(default_storage_url="s3://kubenas/experiments", allowed_storage=[])
    exp = parse_experiment_object(doc, chart)
    assert exp.storage["url"] == (
        "s3://kubenas/experiments/kubenas/digits-demo/0a1b2c3d-0000-4000-8000-000000000001")

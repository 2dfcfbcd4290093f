"""The CI-sized chaos run of benchmarks/scale.py: trials with many in flight on simulated
nodes while the controller and the operator are SIGKILLed, S3 restarts and corrupted result
records arrive. Nothing may halt the search and nothing may be applied twice.

No speed or memory targets here (those are the benchmark's): only what must hold."""

from __future__ import annotations

import os

import pytest

from benchmarks.scale import CI_IN_FLIGHT, parser, report, run_scale

pytestmark = pytest.mark.k8s

TRIALS = int(os.environ.get("KUBENAS_SCALE_TEST_TRIALS", "1000"))


def test_search_survives_kills_s3_restart_and_corrupted_records(dev_cluster, capsys):
    args = parser().parse_args([
        "--trials", str(TRIALS), "--in-flight", str(CI_IN_FLIGHT), "--kill-controller", "3",
        "--kill-operator", "3", "--restart-s3", "1", "--corrupt", "5", "--timeout", "780"])
    out = run_scale(dev_cluster, args, print)
    with capsys.disabled():
        print(report(out, args))
    assert out["failures"] == []
    assert out["counts"]["applied"] == TRIALS
    assert out["duplicate_jobs"] == 0 and out["orphan_jobs"] == 0
    assert len(out["corrupted"]) == 5
    assert all(c["reason"] for c in out["corrupted"].values())
    assert [c["event"] for c in out["chaos"]].count("kill-controller") == 3

"""`kubenas run --cold-children`: the cold path stays available end to end (no zygote)."""

from __future__ import annotations

import copy
import os
import subprocess
import sys

import pytest
import yaml

from tests.kubenas.test_local_run import EXPERIMENT as TINY

pytestmark = pytest.mark.slow


def test_cold_children_run_the_search_without_a_zygote(tmp_path):
    doc = copy.deepcopy(TINY)
    doc["spec"]["budget"]["maxTrials"] = 2
    doc["spec"]["trainer"]["epochs"] = 1
    exp_file = tmp_path / "cold.yaml"
    exp_file.write_text(yaml.safe_dump(doc))
    workdir = tmp_path / "work"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("KUBENAS_LOCAL_CHILDREN", None)
    proc = subprocess.run([sys.executable, "-m", "kubenas", "run", str(exp_file), "--workdir",
                           str(workdir), "--no-progress", "--cold-children"], env=env,
                          capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert len(list((workdir / "store" / "results").glob("*.json"))) == 2
    assert not (workdir / "zygote.log").exists()
    assert all(p.read_text().strip() for p in (workdir / "trials").glob("*/child.log"))

"""The leaderboard's cost columns: GPU-seconds for a trial that held GPUs, CPU-seconds for
one that did not, blanks for a record without a cost."""

from __future__ import annotations

import csv

from kubenas.contracts import Architecture, Cost, ResultRecord
from kubenas.local.report import LEADERBOARD_COLUMNS, write_leaderboard

ARCH = Architecture(space="nasbench201", tokens=[3] * 6, spec={"edges": {
    e: "conv_3x3" for e in ("1<-0", "2<-0", "2<-1", "3<-0", "3<-1", "3<-2")}})


def _record(tid: str, reward: float, cost) -> ResultRecord:
    return ResultRecord(experiment="exp", trial_id=tid, architecture=ARCH, status="succeeded",
                        reward=reward, cost=cost)


def test_gpu_and_cpu_seconds_per_trial(tmp_path):
    write_leaderboard([
        _record("exp-00000", 0.9, Cost(device="cuda", wall_seconds=10.0, gpu_count=2,
                                      gpu_name="NVIDIA H200")),
        _record("exp-00001", 0.8, Cost(device="cpu", wall_seconds=4.25)),
        _record("exp-00002", 0.7, None)], tmp_path / "leaderboard.csv")
    rows = list(csv.DictReader(open(tmp_path / "leaderboard.csv")))
    assert tuple(rows[0]) == LEADERBOARD_COLUMNS
    got = [(r["trial_id"], r["device"], r["gpu_seconds"], r["cpu_seconds"]) for r in rows]
    assert got == [("exp-00000", "cuda 2x NVIDIA H200", "20.0", ""),
                   ("exp-00001", "cpu", "", "4.2"),
                   ("exp-00002", "", "", "")]

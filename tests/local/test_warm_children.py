"""Warm children (forked from the zygote) against cold ones (a fresh `python -m kubenas
train-child`): the same records, crashes still become failed records with the reason, the
zygote's own death fails only what it was running, and nothing outlives `close()`."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from kubenas.contracts import Architecture, TrialRequest, result_key
from kubenas.local.executor import CHILDREN_ENV, ProcessExecutor, exit_reason
from kubenas.local.warm import Zygote, ZygoteError
from kubenas.storage.local import LocalStore

pytestmark = pytest.mark.slow

QUICK = {"dataset": {"name": "digits"}, "epochs": 2, "batchSize": 128, "rewardWindow": 2}
LONG = dict(QUICK, epochs=2000)   # minutes of training: alive until the test ends it


def arch(filters: int, height: int = 3) -> Architecture:
    return Architecture.from_dict({"space": "cnn", "spec": {"layers": [
        {"name": "l1", "inputs": [], "filter_height": height, "filter_width": 3,
         "num_filters": filters},
        {"name": "l2", "inputs": ["l1"], "filter_height": 1, "filter_width": 3,
         "num_filters": filters}]}})


def executor(tmp_path: Path, config: dict, warm: bool, parallelism: int = 2) -> ProcessExecutor:
    workdir = tmp_path / ("warm" if warm else "cold")
    return ProcessExecutor("t", config, LocalStore(workdir / "store"), workdir,
                           parallelism=parallelism, warm=warm)


def run_to_end(ex: ProcessExecutor, requests: list[TrialRequest], limit: float = 300) -> None:
    for r in requests:
        ex.submit(r)
    deadline = time.monotonic() + limit
    while ex.in_flight():
        assert time.monotonic() < deadline, f"children still running after {limit} s"
        time.sleep(0.05)


def record(ex: ProcessExecutor, tid: str) -> dict:
    return json.loads(ex.store.get(result_key(tid)))


CLOCKED = {"seconds", "train_seconds", "images_per_second"}


def comparable(rec: dict) -> dict:
    """A record without what a clock decides (timings, cost, per-epoch seconds and speed)."""
    rec = {k: v for k, v in rec.items() if k not in ("timings", "cost")}
    rec["metrics"] = [dict({k: v for k, v in m.items() if k not in CLOCKED},
                           extra={k: v for k, v in m["extra"].items() if k not in CLOCKED})
                      for m in rec["metrics"]]
    return rec


def alive(pid: int) -> bool:
    """A process that exists and is not a zombie waiting to be reaped."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def wait_for(predicate, what: str, limit: float = 240) -> None:
    deadline = time.monotonic() + limit
    while not predicate():
        assert time.monotonic() < deadline, f"not within {limit} s: {what}"
        time.sleep(0.05)


def test_warm_children_write_the_records_cold_children_write(tmp_path):
    requests = [TrialRequest("t-00000", arch(4)), TrialRequest("t-00001", arch(8, height=1))]
    records = {}
    for warm in (False, True):
        ex = executor(tmp_path, QUICK, warm)
        try:
            run_to_end(ex, requests)
            records[warm] = {r.trial_id: record(ex, r.trial_id) for r in requests}
        finally:
            ex.close()
    for r in requests:
        cold, warm = records[False][r.trial_id], records[True][r.trial_id]
        assert cold["status"] == warm["status"] == "succeeded", (cold, warm)
        assert comparable(warm) == comparable(cold)
    # two different architectures: a child that ignored its arguments could not match both
    assert records[True]["t-00000"]["extra"]["params"] != records[True]["t-00001"]["extra"]["params"]


@pytest.mark.parametrize("warm", [True, False], ids=["warm", "cold"])
def test_a_child_that_exits_non_zero_is_a_failed_record_with_the_reason(tmp_path, warm):
    # a dataset path that is not there: the child raises (an environment error) and exits 1
    ex = executor(tmp_path, dict(QUICK, dataset={"name": "digits", "path": "/nowhere"}), warm)
    try:
        run_to_end(ex, [TrialRequest("t-00000", arch(4))])
    finally:
        ex.close()
    rec = record(ex, "t-00000")
    assert rec["status"] == "failed" and rec["extra"]["exit_code"] == 1
    assert rec["reason"].startswith("child process exited with code 1")
    assert "DatasetError" in rec["reason"] and "'/nowhere'" in rec["reason"]  # the log's tail


@pytest.mark.parametrize("warm", [True, False], ids=["warm", "cold"])
def test_a_child_killed_mid_training_is_a_failed_record_naming_the_signal(tmp_path, warm):
    ex = executor(tmp_path, LONG, warm)
    try:
        ex.submit(TrialRequest("t-00000", arch(4)))
        wait_for(lambda: ex.store.exists("checkpoints/t-00000/latest.pt"), "a first epoch")
        os.kill(ex.child_pids()["t-00000"], signal.SIGKILL)   # what the OOM killer does
        wait_for(lambda: not ex.in_flight(), "the killed child reaped")
    finally:
        ex.close()
    rec = record(ex, "t-00000")
    assert rec["status"] == "failed" and rec["extra"]["exit_code"] == -signal.SIGKILL
    assert rec["reason"].startswith("child process was killed by SIGKILL (out of memory?")


def test_close_leaves_no_zygote_and_no_child_and_writes_no_record(tmp_path):
    ex = executor(tmp_path, LONG, warm=True)
    try:
        for i in range(2):
            ex.submit(TrialRequest(f"t-0000{i}", arch(4 + i)))
        pids = list(ex.child_pids().values()) + [ex.zygote.pid]
        assert len(set(pids)) == 3 and all(alive(p) for p in pids)
    finally:
        ex.close()
    assert [p for p in pids if alive(p)] == []
    assert ex.zygote is None and not ex.running
    # stopped is not failed: a resumed run trains them again
    assert not ex.store.exists(result_key("t-00000")) and not ex.store.exists(result_key("t-00001"))


def test_a_dead_zygote_fails_its_children_and_the_next_one_gets_a_fresh_zygote(tmp_path):
    ex = executor(tmp_path, LONG, warm=True)
    try:
        ex.submit(TrialRequest("t-00000", arch(4)))
        first_zygote, child = ex.zygote.pid, ex.child_pids()["t-00000"]
        os.kill(first_zygote, signal.SIGKILL)
        wait_for(lambda: not ex.in_flight(), "the orphaned child reaped")
        wait_for(lambda: not alive(child), "the child dying with its zygote", limit=30)
        ex.trainer_config = QUICK
        run_to_end(ex, [TrialRequest("t-00001", arch(8))])
        assert ex.zygote.pid != first_zygote
    finally:
        ex.close()
    lost = record(ex, "t-00000")
    assert lost["status"] == "failed" and "the warm worker (zygote" in lost["reason"]
    assert record(ex, "t-00001")["status"] == "succeeded"


def test_a_zygote_that_died_while_idle_is_replaced_on_the_next_submit(tmp_path):
    ex = executor(tmp_path, QUICK, warm=True)
    try:
        run_to_end(ex, [TrialRequest("t-00000", arch(4))])
        first_zygote = ex.zygote.pid
        os.kill(first_zygote, signal.SIGKILL)
        wait_for(lambda: not alive(first_zygote), "the zygote dead", limit=30)
        run_to_end(ex, [TrialRequest("t-00001", arch(8))])
        assert ex.zygote.pid != first_zygote
    finally:
        ex.close()
    assert record(ex, "t-00000")["status"] == record(ex, "t-00001")["status"] == "succeeded"


def test_a_zygote_that_cannot_start_is_a_clear_error(tmp_path):
    log = tmp_path / "zygote.log"
    zygote = Zygote(dict(os.environ, OMP_NUM_THREADS="1"), log, preload=("kubenas_no_such_module",))
    try:
        with pytest.raises(ZygoteError, match=r"exited before starting t-00000 .*--cold-children"):
            zygote.spawn("t-00000", ["train-child"], tmp_path / "child.log")
    finally:
        zygote.close()
    assert "No module named 'kubenas_no_such_module'" in log.read_text()


def test_the_default_comes_from_the_environment_and_bad_values_are_refused(tmp_path, monkeypatch):
    store = LocalStore(tmp_path / "store")
    monkeypatch.setenv(CHILDREN_ENV, "cold")
    assert ProcessExecutor("t", QUICK, store, tmp_path).warm is False
    assert ProcessExecutor("t", QUICK, store, tmp_path, warm=True).warm is True
    monkeypatch.delenv(CHILDREN_ENV)
    assert ProcessExecutor("t", QUICK, store, tmp_path).warm is True
    monkeypatch.setenv(CHILDREN_ENV, "lukewarm")
    with pytest.raises(ValueError, match="KUBENAS_LOCAL_CHILDREN: 'warm' or 'cold', got 'lukewarm'"):
        ProcessExecutor("t", QUICK, store, tmp_path)
    with pytest.raises(ValueError, match="parallelism"):
        ProcessExecutor("t", QUICK, store, tmp_path, parallelism=0, warm=True)


def test_exit_reasons_say_code_or_signal():
    assert exit_reason(3) == "child process exited with code 3"
    assert exit_reason(-signal.SIGSEGV) == "child process was killed by SIGSEGV"
    assert exit_reason(-signal.SIGKILL).startswith("child process was killed by SIGKILL (out of")

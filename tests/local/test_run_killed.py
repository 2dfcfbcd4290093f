"""`kubenas run` with warm children (its default), SIGKILLed while children train: the zygote
and every child die with it (none goes on to write a result), and the same command resumes
the search to the end."""

from __future__ import annotations

import copy
import signal
import time
from pathlib import Path

import pytest
import yaml

from kubenas.controller.loop import read_ledger
from kubenas.storage.local import LocalStore
from tests.kubenas.test_local_run import EXPERIMENT as TINY
from tests.kubenas.test_local_run import _run as run
from tests.local.test_warm_children import alive

pytestmark = pytest.mark.slow

TRIALS = 4
EXPERIMENT = copy.deepcopy(TINY)
EXPERIMENT["metadata"]["name"] = "warm"
EXPERIMENT["spec"]["budget"]["maxTrials"] = TRIALS
EXPERIMENT["spec"]["trainer"]["epochs"] = 30   # seconds per child: time to catch one mid-training


def results(workdir: Path) -> list[str]:
    d = workdir / "store" / "results"
    return sorted(p.name for p in d.glob("*.json")) if d.exists() else []


def training(workdir: Path) -> bool:
    """Some child has a checkpoint: it is past its first epoch and not finished."""
    return any((workdir / "store" / "checkpoints").glob("*/latest.pt"))


def children_of(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.add(int(entry.name))
    return found


def descendants(pid: int) -> set[int]:
    out, todo = set(), [pid]
    while todo:
        kids = children_of(todo.pop())
        out |= kids
        todo += kids
    return out


def test_killed_warm_run_leaves_no_process_behind_and_resumes(tmp_path, monkeypatch):
    monkeypatch.delenv("KUBENAS_LOCAL_CHILDREN", raising=False)   # the default is under test
    exp_file = tmp_path / "warm.yaml"
    exp_file.write_text(yaml.safe_dump(EXPERIMENT))
    workdir = tmp_path / "work"

    first = run(exp_file, workdir)
    deadline = time.monotonic() + 240
    tree: set[int] = set()
    while not (training(workdir) and len(tree) >= 2):   # zygote + a child mid-training
        assert first.poll() is None, first.stdout.read()
        assert time.monotonic() < deadline, f"no child mid-training in 240 s: {tree}"
        tree = descendants(first.pid)
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait()
    before = results(workdir)
    deadline = time.monotonic() + 60
    while any(alive(p) for p in tree):
        assert time.monotonic() < deadline, f"outlived kubenas run: {[p for p in tree if alive(p)]}"
        time.sleep(0.05)
    # a child that outlived its run would have gone on to write its result
    assert results(workdir) == before and len(before) < TRIALS

    second = run(exp_file, workdir)
    out, _ = second.communicate(timeout=400)
    assert second.returncode == 0, out
    assert "resuming warm" in out
    after = results(workdir)
    assert len(after) == TRIALS and set(before) <= set(after)
    state = read_ledger(LocalStore(workdir / "store"))
    assert sorted(state["applied"]) == sorted(n[: -len(".json")] for n in after)
    assert (workdir / "zygote.log").exists()   # it really ran warm

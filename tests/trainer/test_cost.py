"""The child's cost: the clock starts at the process's start (or KUBENAS_STARTED_AT), the
device is what CUDA use says, and every record a child writes carries it."""

from __future__ import annotations

import subprocess
import sys
import time

from kubenas.contracts import Architecture
from kubenas.storage.local import LocalStore
from kubenas.trainer.child import train_child
from kubenas.trainer.cost import STARTED_AT_ENV, measure_cost, process_started_at, started_at

NASBENCH = Architecture(space="nasbench201", tokens=[3] * 6, spec={"edges": {
    e: "conv_3x3" for e in ("1<-0", "2<-0", "2<-1", "3<-0", "3<-1", "3<-2")}})


def test_a_fresh_process_reads_its_own_start_from_proc():
    code = ("import time; t = time.time(); from kubenas.trainer.cost import process_started_at; "
            "print(t - process_started_at())")
    began = time.time()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    elapsed = time.time() - began
    # the interpreter's start-up counts, to /proc's 10 ms resolution
    assert -0.05 <= float(out) <= elapsed + 0.05, (out, elapsed)
    assert process_started_at() < began   # this test process started before


def test_the_launcher_can_start_the_clock_and_a_bad_value_falls_back(monkeypatch):
    monkeypatch.setenv(STARTED_AT_ENV, str(time.time() - 100.0))
    cost = measure_cost()
    assert cost.clock == STARTED_AT_ENV and 100.0 <= cost.wall_seconds < 110.0
    monkeypatch.setenv(STARTED_AT_ENV, "yesterday")
    start, clock = started_at()
    assert clock == "process" and abs(start - process_started_at()) < 0.05


def test_a_cpu_child_costs_cpu_seconds_from_its_process_start(tmp_path, monkeypatch):
    monkeypatch.delenv(STARTED_AT_ENV, raising=False)
    store = LocalStore(tmp_path)
    before = time.time() - process_started_at()
    record = train_child("exp-00001", "exp", NASBENCH, {}, store)  # a failed record
    assert record.status == "failed" and record.cost is not None
    assert record.cost.device == "cpu" and record.cost.gpu_count == 0
    assert record.cost.gpu_name is None and record.cost.clock == "process"
    assert record.cost.wall_seconds >= before and record.cost.resource == "CPU"


def test_a_process_that_used_cuda_costs_gpu_seconds_of_every_gpu_it_sees(monkeypatch):
    # no GPU on the test machine: torch.cuda's answers stand in for a pod holding two
    import torch

    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i: f"NVIDIA H200 #{i}")
    monkeypatch.setenv(STARTED_AT_ENV, str(time.time() - 10.0))
    cost = measure_cost()
    assert (cost.device, cost.gpu_count, cost.gpu_name) == ("cuda", 2, "NVIDIA H200 #0")
    assert cost.resource == "GPU" and 20.0 <= cost.seconds < 22.0

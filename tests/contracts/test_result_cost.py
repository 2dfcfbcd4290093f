"""The result record's optional cost: round trip, older records, types, totals."""

from __future__ import annotations

import copy

import pytest

from kubenas.contracts import Architecture, ContractError, Cost, ResultRecord
from kubenas.contracts.result import add_cost, cost_text, cost_totals, empty_cost_totals

ARCH = Architecture(space="nasbench201", tokens=[3] * 6, spec={"edges": {
    e: "conv_3x3" for e in ("1<-0", "2<-0", "2<-1", "3<-0", "3<-1", "3<-2")}})


def _record(tid: str = "exp-00001", cost: Cost | None = None) -> ResultRecord:
    return ResultRecord(experiment="exp", trial_id=tid, architecture=ARCH, status="succeeded",
                        reward=0.5, cost=cost)


def test_cost_round_trips_and_an_older_record_without_one_still_reads():
    gpu = Cost(device="cuda", wall_seconds=12.5, gpu_count=2, gpu_name="NVIDIA H200")
    doc = _record(cost=gpu).to_dict()
    assert doc["cost"] == {"device": "cuda", "wall_seconds": 12.5, "gpu_count": 2,
                           "gpu_name": "NVIDIA H200", "clock": "process"}
    assert ResultRecord.from_json(_record(cost=gpu).to_json()).cost == gpu
    old = copy.deepcopy(doc)
    del old["cost"]
    assert ResultRecord.from_dict(old).cost is None
    assert ResultRecord.from_dict({**old, "cost": None}).cost is None
    assert gpu.resource == "GPU" and gpu.seconds == 25.0
    assert Cost(device="cpu", wall_seconds=3.0).resource == "CPU"


@pytest.mark.parametrize("cost, field", [
    ("fast", "cost"), ([1], "cost"),
    ({"wall_seconds": 1.0}, "cost.device"),
    ({"device": "gpu", "wall_seconds": 1.0}, "cost.device"),
    ({"device": 0, "wall_seconds": 1.0}, "cost.device"),
    ({"device": "cpu"}, "cost.wall_seconds"),
    ({"device": "cpu", "wall_seconds": "1"}, "cost.wall_seconds"),
    ({"device": "cpu", "wall_seconds": True}, "cost.wall_seconds"),
    ({"device": "cpu", "wall_seconds": -1.0}, "cost.wall_seconds"),
    ({"device": "cpu", "wall_seconds": float("nan")}, "cost.wall_seconds"),
    ({"device": "cpu", "wall_seconds": 10**400}, "cost.wall_seconds"),
    ({"device": "cuda", "wall_seconds": 1.0, "gpu_count": 1.5}, "cost.gpu_count"),
    ({"device": "cuda", "wall_seconds": 1.0, "gpu_count": -1}, "cost.gpu_count"),
    ({"device": "cuda", "wall_seconds": 1.0, "gpu_name": 7}, "cost.gpu_name"),
    ({"device": "cpu", "wall_seconds": 1.0, "clock": []}, "cost.clock"),
])
def test_a_cost_of_the_wrong_type_is_a_contract_error_naming_the_field(cost, field):
    doc = {**_record().to_dict(), "cost": cost}
    with pytest.raises(ContractError) as err:
        ResultRecord.from_dict(doc)
    assert str(err.value).startswith(f"result.{field}: must be"), err.value


def test_totals_split_gpu_and_cpu_seconds_and_count_records_without_a_cost():
    records = [_record("exp-00001", Cost(device="cpu", wall_seconds=1.25)),
               _record("exp-00002", Cost(device="cpu", wall_seconds=2.0)),
               _record("exp-00003", Cost(device="cuda", wall_seconds=10.0, gpu_count=4)),
               _record("exp-00004")]
    totals = cost_totals(records)
    assert totals == {"trials": 4, "cpuSeconds": 3.25, "gpuSeconds": 40.0, "withoutCost": 1}
    assert cost_text(totals) == \
        "4 trials, 3.2 CPU-seconds (40.0 GPU-seconds), 1 without a cost record"
    assert cost_text(cost_totals(records[:2])) == "2 trials, 3.2 CPU-seconds (0 GPU-seconds)"
    assert add_cost(empty_cost_totals(), records[3]) == \
        {"trials": 1, "cpuSeconds": 0.0, "gpuSeconds": 0.0, "withoutCost": 1}

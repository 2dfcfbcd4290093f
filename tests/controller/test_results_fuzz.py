"""1,000 corrupted result records through the controller's result path (StoreResultSource on
the filesystem store): every one becomes a failed result for the trial its key names, with a
reason; none raises, none is skipped. Deterministic (seed 7); the counts are printed."""

from __future__ import annotations

import collections
import json
import random

from kubenas.contracts import Architecture, Cost, ResultRecord, result_key
from kubenas.controller.results import StoreResultSource, trial_key
from kubenas.storage.local import LocalStore

CASES = 1000
SEED = 7
ARCHITECTURES = [
    Architecture(space="nasbench201", tokens=[3] * 6, spec={"edges": {
        e: "conv_3x3" for e in ("1<-0", "2<-0", "2<-1", "3<-0", "3<-1", "3<-2")}}),
    Architecture(space="cnn", tokens=[1, 2, 0], spec={"layers": [
        {"name": "layer_1", "type": "conv", "inputs": ["input"], "filter_height": 3,
         "filter_width": 3, "stride_height": 1, "stride_width": 1, "num_filters": 8}]}),
]
# Fields of the record (and of its architecture) whose type the contract fixes.
TYPED = ["experiment", "trial_id", "status", "reward", "metrics", "timings", "extra", "architecture",
         "architecture.space", "architecture.spec", "architecture.tokens", "architecture.kind",
         "cost", "cost.device", "cost.wall_seconds", "cost.gpu_count", "cost.gpu_name"]
WRONG = ["x", 7, 2.5, True, None, [], {}, [1, "a"], {"k": [1]}, "\u202e💥"]
HUGE = [1e308, -1e308, 10**400, -(10**400), 1e6 * 1.0000001, float("nan"), float("inf"),
        float("-inf")]


def _valid(tid: str, rng: random.Random) -> dict:
    arch = rng.choice(ARCHITECTURES)
    return ResultRecord(experiment="exp", trial_id=tid, architecture=arch, status="succeeded",
                        reward=rng.random(), metrics=[{"epoch": 1, "train_loss": 0.5, "val_acc": 0.9}],
                        timings={"finished_at": "2026-01-01T00:00:00Z"},
                        cost=Cost(device="cuda", wall_seconds=9.5, gpu_count=1,
                                  gpu_name="NVIDIA H200")).to_dict()


def _set(doc: dict, dotted: str, value) -> None:
    *parents, last = dotted.split(".")
    for key in parents:
        doc = doc[key]
    doc[last] = value


def _wrong_type(doc: dict, rng: random.Random) -> None:
    field = rng.choice(TYPED)
    current = _get(doc, field)
    allowed = {type(current)}
    if field == "reward":
        allowed |= {int, float}        # an int reward is a number too
    if field in ("metrics", "timings", "extra", "cost", "cost.gpu_count", "cost.gpu_name"):
        allowed.add(type(None))        # optional: null is their empty value
    if field == "cost.wall_seconds":
        allowed |= {int, float}        # any non-negative number of seconds
    _set(doc, field, rng.choice([w for w in WRONG if type(w) not in allowed]))


def _get(doc: dict, dotted: str):
    for key in dotted.split("."):
        doc = doc[key]
    return doc


def _corrupt(tid: str, rng: random.Random) -> tuple[str, bytes]:
    """A record for ``tid`` broken in one of several ways that always break the contract."""
    doc = _valid(tid, rng)
    kind = rng.choice(["truncated", "wrong_type", "wrong_trial_id", "huge_value", "deep_nesting",
                       "missing_field", "not_utf8", "not_json_object"])
    if kind == "truncated":
        data = json.dumps(doc).encode()
        return kind, data[:rng.randrange(0, len(data) - 1)]
    if kind == "not_utf8":
        return kind, b"\xff\xfe" + json.dumps(doc).encode()[2:]
    if kind == "not_json_object":
        return kind, json.dumps(rng.choice([[doc], "record", 42, None])).encode()
    if kind == "wrong_type":
        _wrong_type(doc, rng)
    elif kind == "wrong_trial_id":
        doc["trial_id"] = rng.choice(["exp-99999", tid + "0", tid.upper(), "ｅｘｐ-00001", ""])
    elif kind == "huge_value":
        doc["reward"] = rng.choice(HUGE)
    elif kind == "deep_nesting":  # written as text: json.dumps itself would recurse too deep
        _set(doc, rng.choice(["reward", "architecture.spec", "metrics", "architecture.tokens"]),
             "__DEEP__")
        depth = rng.choice([50, 500, 5000, 50000])
        return kind, json.dumps(doc).replace('"__DEEP__"', "[" * depth + "1" + "]" * depth).encode()
    else:
        del doc[rng.choice(["experiment", "trial_id", "architecture", "status"])]
    return kind, json.dumps(doc).encode()


def test_a_thousand_corrupted_records_become_failed_results_with_reasons(tmp_path, capsys):
    rng = random.Random(SEED)
    store = LocalStore(tmp_path)
    kinds = {}
    for i in range(CASES):
        tid = f"exp-{i:05d}"
        kinds[tid], data = _corrupt(tid, rng)
        store.put_new(result_key(tid), data)
        if i % 3 == 0:  # some trials have their sampled description at hand
            store.put_new(trial_key(tid), json.dumps({"architecture": ARCHITECTURES[0].to_dict()}).encode())
    source = StoreResultSource(store)
    got = {r.trial_id: r for r in source.poll(set())}
    assert sorted(got) == sorted(kinds), "every corrupted record is a result for its key"
    counts = collections.Counter()
    for tid, record in got.items():
        assert record.status == "failed" and record.reward is None, (kinds[tid], record)
        assert record.reason.startswith(f"unreadable result record results/{tid}.json: "), record.reason
        assert len(record.reason) < 20_000, "a reason names the problem, it does not echo the record"
        counts[kinds[tid]] += 1
    assert sorted(r.trial_id for r in source.all()) == sorted(kinds)
    with capsys.disabled():
        print(f"\nresult fuzz, {CASES} corrupted records (seed {SEED}): all failed results with a reason")
        print("  " + ", ".join(f"{kind} {n}" for kind, n in sorted(counts.items())))

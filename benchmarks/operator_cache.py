"""What the operator's Trial cache costs per finished Trial, at 1,000 and at 12,800 Trials.

The operator's peak RSS must stay flat (within 20 %) from 1,000 to 12,800 trials (issue 10).
Most of what grows with n is the Trial informer's cache: every finished Trial stays in it
(its phase and reward feed the Experiment's counts and best). This feeds the real
``Informer`` (with the operator's own trim, pack and indexes) Trials shaped as the API
server returns them — a 15-layer CNN architecture, the trainer settings, managedFields, a
terminal status with conditions — each parsed from its own JSON text as a watch event is,
and prints the bytes held per Trial (tracemalloc) and the process's RSS.

    .venv/bin/python benchmarks/operator_cache.py [--trials 1000 12800]
"""

from __future__ import annotations

import argparse
import json
import resource
import tracemalloc
import uuid

from kubenas.operator import constants as C
from kubenas.operator import indexes as X
from kubenas.operator.informer import Informer
from kubenas.operator.jobs import trial_labels
from kubenas.operator.trim import pack_trial, trim_trial, unpack_trial

EXPERIMENT, NAMESPACE, EXP_UID = "paper-scale", "team-a", str(uuid.uuid4())


def _architecture(layers: int = 15) -> dict:
    spec = [{"filterHeight": 3, "filterWidth": 5, "numFilters": 36, "stride": 1,
             "skips": list(range(i))} for i in range(layers)]
    return {"kind": "Architecture", "space": "cnn", "version": 1,
            "tokens": list(range(layers * 4)), "spec": {"layers": spec}}


def finished_trial_json(i: int) -> str:
    """One finished Trial as the API server sends it, as JSON text."""
    name = f"{EXPERIMENT}-{i:05d}"
    stamp = "2026-12-04T19:00:00Z"
    obj = {
        "apiVersion": C.API_VERSION, "kind": C.TRIAL_KIND,
        "metadata": {
            "name": name, "namespace": NAMESPACE, "uid": str(uuid.uuid4()),
            "resourceVersion": str(100000 + i), "generation": 1, "creationTimestamp": stamp,
            "labels": trial_labels(EXPERIMENT, name, "pool-a"),
            "annotations": {C.ANNOTATION_EXPERIMENT_UID: EXP_UID},
            "ownerReferences": [{"apiVersion": C.API_VERSION, "kind": C.EXPERIMENT_KIND,
                                 "name": EXPERIMENT, "uid": EXP_UID, "controller": True,
                                 "blockOwnerDeletion": True}],
            "managedFields": [{"manager": "kubenas", "operation": "Update",
                               "apiVersion": C.API_VERSION, "time": stamp,
                               "fieldsType": "FieldsV1", "fieldsV1": {"f:status": {}}}] * 3},
        "spec": {"experiment": EXPERIMENT, "pool": "pool-a", "architecture": _architecture(),
                 "trainer": {"dataset": {"name": "cifar10"}, "epochs": 50, "batchSize": 128}},
        "status": {"phase": C.TRIAL_SUCCEEDED, "reward": 0.5 + (i % 997) / 2000,
                   "reason": "JobComplete", "message": "the Job completed",
                   "jobName": f"kubenas-{name}", "startTime": stamp, "completionTime": stamp,
                   "conditions": [{"type": "Complete", "status": "True", "reason": "JobComplete",
                                   "message": "the Job completed", "lastTransitionTime": stamp}]},
    }
    return json.dumps(obj)


def held_per_trial(n: int) -> tuple[float, int]:
    """(bytes the cache and its indexes hold per Trial, max RSS in KiB) after n Trials."""
    texts = [finished_trial_json(i) for i in range(n)]
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    informer = Informer(kube=None, path="/unused", name="trials", on_change=lambda *_: None,
                        trim=trim_trial, pack=pack_trial, unpack=unpack_trial,
                        indexers=X.TRIAL_INDEXERS)
    for text in texts:
        informer._apply({"type": "MODIFIED", "object": json.loads(text)})
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert informer.count(X.BY_PHASE, (NAMESPACE, EXPERIMENT, C.TRIAL_SUCCEEDED)) == n
    return held / n, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, nargs="+", default=[1000, 12800])
    args = parser.parse_args()
    print(f"{'trials':>8} {'bytes/trial':>12} {'cache MiB':>10}")
    for n in args.trials:
        per, _ = held_per_trial(n)
        print(f"{n:>8} {per:>12.0f} {per * n / 2**20:>10.1f}")


if __name__ == "__main__":
    main()

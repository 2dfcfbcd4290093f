"""A stand-in for `kubenas controller` in the controller Deployment: the same arguments, the
same API surface (KubernetesExecutor + write_experiment_status, with the pod's own
ServiceAccount), no torch. It submits the budget's trials as slots free up, waits for their
result records in object storage, writes the Experiment's status and then idles, as the
real controller does."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("command", choices=["controller"])
    p.add_argument("--experiment", required=True)
    p.add_argument("--namespace", required=True)
    p.add_argument("--metrics-port", type=int, default=None)
    args = p.parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    from kubenas.contracts import Architecture, ResultRecord, TrialRequest, result_key
    from kubenas.operator.executor import KubernetesExecutor
    from kubenas.storage import NotFound, open_store

    ex = KubernetesExecutor(args.experiment, args.namespace)
    exp = ex.experiment
    store = open_store(exp.storage["url"], endpoint_url=exp.storage.get("endpoint"))
    ex.write_status(phase="Searching", conditions=[{"type": "Valid", "status": "True",
                                                  "reason": "SpecValid", "message": "fake"}])
    arch = Architecture.from_dict({"space": "cnn", "spec": {"layers": [
        {"name": "layer_1", "type": "conv", "inputs": ["input"], "filter_height": 3,
         "filter_width": 3, "num_filters": 8}]}})
    ids = [f"{exp.name}-{i:05d}" for i in range(exp.max_trials)]
    submitted, results = set(), {}
    print(f"fake-controller: {exp.name} pools={ex.pools} store={store.url()}", flush=True)
    while len(results) < len(ids) and not stop.is_set():
        for tid in ids:
            if tid not in submitted and ex.free_slots() > 0:
                ex.submit(TrialRequest(trial_id=tid, architecture=arch))
                submitted.add(tid)
        for tid in submitted - set(results):
            try:
                results[tid] = ResultRecord.from_json(store.get(result_key(tid)))
            except NotFound:
                pass
        time.sleep(0.3)
    ok = {t: r.reward for t, r in results.items() if r.succeeded}
    best = max(ok, key=ok.get) if ok else None
    ex.write_status(phase="Succeeded", summary={"bestTrial": best, "bestReward": ok.get(best),
                                                 "bestArchitecture": arch.to_dict()},
                    message=json.dumps({"results": len(results)}))
    print("fake-controller: done", flush=True)
    while not stop.wait(1.0):
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Experiment / Trial documents shared by the operator tests."""

from __future__ import annotations

import copy

CNN_ARCH = {
    "apiVersion": "kubenas.dev/v1", "kind": "Architecture", "space": "cnn", "tokens": [1, 2, 0],
    "spec": {"layers": [{"name": "layer_1", "type": "conv", "inputs": ["input"],
                         "filter_height": 3, "filter_width": 5, "stride_height": 1,
                         "stride_width": 1, "num_filters": 36}]},
}


def experiment_spec(**over) -> dict:
    spec = {
        "search": {"space": "cnn", "strategy": "reinforce", "seed": 0},
        "budget": {"maxTrials": 4},
        "parallelism": 2,
        "trainer": {"dataset": {"name": "digits"}, "epochs": 1, "batchSize": 32},
        "storage": {"url": "s3://kubenas/exp", "endpoint": "http://127.0.0.1:8333",
                    "secretName": "s3-creds"},
        "jobSettings": {"backoffLimit": 1, "activeDeadlineSeconds": 600,
                        "ttlSecondsAfterFinished": 3600},
        "workerPools": [
            {"name": "pool-a", "nodeSelector": {"kubenas.dev/pool": "pool-a"},
             "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
             "gpusPerTrial": 1, "resources": {"cpu": "500m", "memory": "256Mi"}, "maxInFlight": 2},
            {"name": "pool-b", "nodeSelector": {"kubenas.dev/pool": "pool-b"},
             "gpusPerTrial": 0, "resources": {"cpu": 1}, "maxInFlight": 1},
        ],
    }
    spec.update(copy.deepcopy(over))
    return spec


def experiment(name: str = "exp1", namespace: str = "ns1", uid: str = "uid-exp", **over) -> dict:
    return {"apiVersion": "kubenas.dev/v1", "kind": "Experiment",
            "metadata": {"name": name, "namespace": namespace, "uid": uid,
                         "resourceVersion": "1"},
            "spec": experiment_spec(**over)}


def trial(name: str = "exp1-00000", experiment: str = "exp1", namespace: str = "ns1",
          pool: str = "pool-a", uid: str = "uid-trial", arch: dict = None, trainer=None) -> dict:
    spec = {"experiment": experiment, "pool": pool, "architecture": copy.deepcopy(arch or CNN_ARCH)}
    if trainer is not None:
        spec["trainer"] = trainer
    return {"apiVersion": "kubenas.dev/v1", "kind": "Trial",
            "metadata": {"name": name, "namespace": namespace, "uid": uid, "resourceVersion": "2"},
            "spec": spec}

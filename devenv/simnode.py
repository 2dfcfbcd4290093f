"""Simulated nodes for scale tests, KWOK-style: a trial pod runs no process at all.

The fake kubelet's node registration, heartbeats, pod watch and status patches are reused
(pod status still goes through the real apiserver; Jobs still complete under the real job
controller), but a pod whose container runs ``kubenas train-child`` is only *simulated*: it
is Running for a duration, then the node writes the trial's result record exactly as a child
would (create-only ``results/<trial_id>.json``, a valid ``kubenas.contracts`` record, with
the store URL from the pod's arguments and the credentials from the pod's environment, i.e.
its Secret), and the pod is Succeeded. So one machine holds hundreds of pods in flight.
Every other pod (the controller Deployment's) still runs as a local process.

Only for scale: nothing here proves that a child trains or that a container starts.
Start it with ``devenv/cluster.py --nodes simulated`` and ``KUBENAS_SIM_CHILD_SECONDS``.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import random
import time
from datetime import datetime, timezone
from typing import Optional

from devenv.fake_kubelet import ConfigError, PodWorker, log, now


def child_arguments(argv: list[str]) -> Optional[argparse.Namespace]:
    """The train-child arguments of a trial container, or None for any other container."""
    if "train-child" not in argv:
        return None
    p = argparse.ArgumentParser(add_help=False)
    for flag in ("--experiment", "--trial-id", "--architecture-json", "--store"):
        p.add_argument(flag, required=True)
    args, _ = p.parse_known_args(argv[argv.index("train-child") + 1:])
    return args


def simulated_reward(trial_id: str) -> float:
    """A reproducible reward in (0, 1) per trial id (the search needs some signal)."""
    seed = int(hashlib.sha256(trial_id.encode()).hexdigest()[:8], 16)
    return round(random.Random(seed).uniform(0.05, 0.95), 6)


@functools.lru_cache(maxsize=64)
def _store(url: str, endpoint: Optional[str], key: Optional[str], secret: Optional[str],
           region: str):
    """One store (one boto3 client, thread-safe) per experiment and credentials: making a
    client costs more CPU than the whole simulated child."""
    from kubenas.storage import open_store

    return open_store(url, endpoint_url=endpoint, access_key_id=key, secret_access_key=secret,
                      region=region)


def write_result(args: argparse.Namespace, env: dict, started: str) -> None:
    """The record a succeeded child writes (create-only: a second attempt keeps the first)."""
    from kubenas.contracts import Architecture, ResultRecord, result_key
    from kubenas.storage import AlreadyExists

    store = _store(args.store, env.get("KUBENAS_S3_ENDPOINT"), env.get("AWS_ACCESS_KEY_ID"),
                   env.get("AWS_SECRET_ACCESS_KEY"), env.get("AWS_DEFAULT_REGION") or "us-east-1")
    record = ResultRecord(
        experiment=args.experiment, trial_id=args.trial_id,
        architecture=Architecture.from_json(args.architecture_json), status="succeeded",
        reward=simulated_reward(args.trial_id), reason=None,
        timings={"started_at": started,
                 "finished_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")},
        extra={"simulated": True})
    try:
        store.put_new(result_key(args.trial_id), record.to_json())
    except AlreadyExists:
        pass


class SimulatedPodWorker(PodWorker):
    """A trial pod that runs for ``child_seconds`` and writes its result; other pods as
    the fake kubelet runs them."""

    child_seconds = 0.0

    def _run(self) -> None:
        try:
            argv, env, _ = self._prepare()
        except ConfigError:
            return super()._run()          # it waits for its Secret the usual way
        args = child_arguments(argv)
        if args is None:
            return super()._run()
        self.started_at = now()
        self._patch_status("Running", {"running": {"startedAt": self.started_at}}, True)
        deadline = time.monotonic() + self.child_seconds
        while not self._stopping() and time.monotonic() < deadline:
            self._wait_or_wake(deadline - time.monotonic())
        if self._stopping():
            return self._terminate()
        rc, reason = 0, "Completed"
        try:
            write_result(args, env, self.started_at)
        except Exception as exc:  # noqa: BLE001 - a child that cannot write its result fails
            log(f"{self.ns}/{self.name}: simulated child failed: {exc}")
            rc, reason = 1, "Error"
        self._patch_status("Succeeded" if rc == 0 else "Failed", {"terminated": {
            "exitCode": rc, "reason": reason, "startedAt": self.started_at,
            "finishedAt": now()}}, False)


def worker_class(child_seconds: float) -> type:
    """A SimulatedPodWorker subclass with its duration (one per kubelet process)."""
    return type("SimulatedPodWorker", (SimulatedPodWorker,), {"child_seconds": child_seconds})


"""A stand-in for the `kubenas` program in trial Jobs: same `train-child` arguments, same
result record in the same store, no torch. The fake kubelet runs it as the pod's process.

Behaviour comes from the trainer config's free-form ``options.fake``:
    {"sleep": 0.5, "reward": 0.7}                    -> succeeded with that reward
    {"status": "failed", "reason": "ArchitectureError: too big"}
    {"exit": 3, "noResult": true}                    -> dies without a result record
It checks the contract on the way: the architecture parses, the store credentials come from
the environment (the Secret), never from arguments.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import datetime, timezone


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("command", choices=["train-child"])
    p.add_argument("--experiment", required=True)
    p.add_argument("--trial-id", required=True)
    p.add_argument("--architecture-json", required=True)
    p.add_argument("--trainer-config-json", required=True)
    p.add_argument("--store", required=True)
    args = p.parse_args(argv)

    from kubenas.contracts import Architecture, ResultRecord, result_key
    from kubenas.storage import AlreadyExists, open_store

    arch = Architecture.from_json(args.architecture_json)
    config = json.loads(args.trainer_config_json)
    fake = (config.get("options") or {}).get("fake") or {}
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "KUBENAS_S3_ENDPOINT"):
        if not os.environ.get(key):
            print(f"fake-kubenas: {key} missing from the environment", file=sys.stderr)
            return 4
    print(f"fake-kubenas: training {args.trial_id} ({len(arch.spec.get('layers', []))} layers)",
          flush=True)
    store = open_store(args.store)
    started = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    store.put(f"started/{args.trial_id}", started.encode())
    time.sleep(float(fake.get("sleep", 0.2)))
    if not fake.get("noResult"):
        status = fake.get("status", "succeeded")
        record = ResultRecord(
            experiment=args.experiment, trial_id=args.trial_id, architecture=arch, status=status,
            reward=float(fake.get("reward", 0.5)) if status == "succeeded" else None,
            reason=fake.get("reason", "fake failure") if status != "succeeded" else None,
            timings={"started_at": started,
                     "finished_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")},
            extra={"fake": True})
        try:
            store.put_new(result_key(args.trial_id), record.to_json())
        except AlreadyExists:
            pass
    return int(fake.get("exit", 0))


if __name__ == "__main__":
    raise SystemExit(main())

"""An instant trainer for benchmarks/orchestration.py: `train-child` with kubenas' arguments,
no training. It writes a valid result record create-only to the store (as a real child does,
``put_new``: a retried pod never overwrites) and exits, so what is measured is orchestration.

The reward is a fixed function of the architecture (wider, 3x3-ish layers score higher, plus
a per-architecture jitter), so the REINFORCE controller has something to learn.

    KUBENAS_CHILD_COMMAND='["/path/.venv/bin/python", "benchmarks/instant_child.py"]'
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from datetime import datetime, timezone


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def reward_of(arch: dict) -> float:
    layers = (arch.get("spec") or {}).get("layers") or []
    if not layers:
        return 0.0
    width = sum(int(l.get("num_filters", 0)) for l in layers) / (64.0 * len(layers))
    square = sum(1 for l in layers if l.get("filter_height") == l.get("filter_width") == 3) / len(layers)
    jitter = int(hashlib.sha256(json.dumps(arch, sort_keys=True).encode()).hexdigest()[:8], 16) / 2**32
    return round(min(1.0, 0.4 * width + 0.4 * square + 0.2 * jitter), 6)


def main(argv=None) -> int:
    started = _now()
    p = argparse.ArgumentParser(prog="instant_child")
    p.add_argument("command", choices=["train-child"])
    p.add_argument("--experiment", required=True)
    p.add_argument("--trial-id", required=True)
    p.add_argument("--architecture-json", required=True)
    p.add_argument("--trainer-config-json", required=True)
    p.add_argument("--store", required=True)
    p.add_argument("--cache-dir", default=None)
    args = p.parse_args(argv)

    from kubenas.contracts import Architecture, ResultRecord, result_key
    from kubenas.storage import AlreadyExists, StorageError, open_store

    arch = Architecture.from_json(args.architecture_json)
    try:
        store = open_store(args.store)
        record = ResultRecord(experiment=args.experiment, trial_id=args.trial_id,
                              architecture=arch, status="succeeded",
                              reward=reward_of(arch.to_dict()),
                              timings={"started_at": started, "finished_at": _now()},
                              extra={"instant": True})
        store.put_new(result_key(args.trial_id), record.to_json())
    except AlreadyExists:
        pass                      # an earlier attempt wrote it: the first record wins
    except StorageError as exc:
        print(f"instant_child: storage unavailable: {exc}", file=sys.stderr)
        return 3                  # the Job retries
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

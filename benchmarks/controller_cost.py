"""The controller's own cost per applied result, as the experiment grows.

One search (REINFORCE, the paper's CNN space at a fixed depth) runs to ``--trials`` against
``InstantExecutor`` (every child's result record is written to the store the moment it is
submitted) and ``StoreResultSource`` on a LocalStore: no training, no cluster, so what is
measured is the loop itself — strategy math, state writes, listings, reads. At each of the
checkpoints it prints, for the results applied since the previous checkpoint: CPU seconds
and bytes written per applied result, store requests per trial, and the state's size.

    .venv/bin/python benchmarks/controller_cost.py                     # 100 .. 12,800
    .venv/bin/python benchmarks/controller_cost.py --trials 1000 --layers 15

The strategy's share (one LSTM forward+backward per result, one sample per trial) grows
with ``--layers``, not with n; everything else must be flat in n.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import Counter

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from kubenas.controller.instant import (InstantExecutor, cnn_reinforce_experiment,  # noqa: E402
                                        strategy_factory)
from kubenas.controller.loop import STATE_KEY, LoopEvent, SearchLoop  # noqa: E402
from kubenas.controller.results import StoreResultSource  # noqa: E402
from kubenas.storage.local import LocalStore  # noqa: E402

CHECKPOINTS = (100, 1000, 5000, 12800)


class MeteredStore(LocalStore):
    """A LocalStore that counts requests by kind and bytes written."""

    def __init__(self, root) -> None:
        super().__init__(root)
        self.requests: Counter = Counter()
        self.written = 0

    def put_new(self, key, data):
        self.requests["put"] += 1
        self.written += len(data)
        return super().put_new(key, data)

    def put_if_match(self, key, data, etag):
        self.requests["put"] += 1
        self.written += len(data)
        return super().put_if_match(key, data, etag)

    def get_with_etag(self, key):
        self.requests["get"] += 1
        return super().get_with_etag(key)

    def list(self, prefix="", start_after=None):
        self.requests["list"] += 1
        return super().list(prefix, start_after)


def run(trials: int, in_flight: int, layers: int, checkpoints: list[int]) -> list[dict]:
    import torch

    torch.set_num_threads(1)
    store = MeteredStore(tempfile.mkdtemp(prefix="controller-cost-"))
    exp = cnn_reinforce_experiment("cost", trials, layers=layers)
    rows: list[dict] = []
    marks = sorted({c for c in checkpoints if c <= trials})
    last = {"n": 0, "cpu": time.process_time(), "written": 0, "requests": 0}
    loop: list = []

    def on_event(e: LoopEvent) -> None:
        applied = loop[0].summary()["applied"]  # a batch's events come after its commit
        if e.kind != "applied" or not marks or applied < marks[0]:
            return
        cpu, requests = time.process_time(), sum(store.requests.values())
        while marks and marks[0] <= applied:
            mark = marks.pop(0)
        n, done = applied, applied - last["n"]
        rows.append({"n": mark, "cpu_ms": 1000 * (cpu - last["cpu"]) / done,
                     "kb_written": (store.written - last["written"]) / done / 1024,
                     "requests": (requests - last["requests"]) / done,
                     "state_kb": (store.root / STATE_KEY).stat().st_size / 1024})
        last.update(n=n, cpu=time.process_time(), written=store.written, requests=requests)

    loop.append(SearchLoop(exp, strategy_factory(exp), InstantExecutor(store, in_flight),
                           StoreResultSource(store), store, poll_interval=0, on_event=on_event))
    loop[0].run()
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=12800)
    ap.add_argument("--in-flight", type=int, default=800, help="free slots (the paper: 800)")
    ap.add_argument("--layers", type=int, default=6,
                    help="CNN depth (fixed); 15 is the paper's final depth, ~4x the strategy CPU")
    args = ap.parse_args(argv)
    t0 = time.time()
    rows = run(args.trials, args.in_flight, args.layers, list(CHECKPOINTS) + [args.trials])
    print(f"REINFORCE, cnn space at {args.layers} layers, {args.in_flight} in flight, "
          f"LocalStore; per applied result over the window ending at n:")
    print(f"{'n':>7} {'CPU ms/result':>14} {'KB written/result':>18} "
          f"{'requests/trial':>15} {'state KB':>9}")
    for r in rows:
        print(f"{r['n']:>7} {r['cpu_ms']:>14.2f} {r['kb_written']:>18.2f} "
              f"{r['requests']:>15.2f} {r['state_kb']:>9.1f}")
    print(f"wall {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Start-up overhead of local children: cold (a fresh `python -m kubenas train-child` per
trial) against warm (forked from the zygote that has torch and the trainer imported), side by
side in one run, on the same workload.

1. Children: the same trials (a fixed set of small CNNs on digits) through
   ``ProcessExecutor`` cold, then warm. Per child, overhead = its wall time (submit to its exit
   reaped, polled every 20 ms) minus its training time as its result record reports it
   (``timings.train_seconds``): interpreter and imports, data loading, the TorchScript export,
   the result write; "outside the trainer" is the part before and after ``train_child``'s
   clock (``timings.total_seconds``): process start, imports, exit. The first warm child
   also carries the zygote's own start-up (paid once per run), so the median is the figure
   per child and the maximum shows that one.
2. Quickstart: `kubenas run` on examples/quickstart.yaml (its first ``--quickstart-trials``
   trials; ``--full`` for all 48) cold, then warm; wall time of the whole command.

    nice -n 10 .venv/bin/python benchmarks/local_overhead.py                  # 8 children, 12-trial quickstart
    .venv/bin/python benchmarks/local_overhead.py --children 16 --full        # the whole quickstart
    .venv/bin/python benchmarks/local_overhead.py --quickstart-trials 0       # children only

Targets: warm per-child overhead (median) <= 0.5 s; quickstart >= 2x faster warm on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from kubenas.contracts import Architecture, TrialRequest, result_key  # noqa: E402
from kubenas.local.executor import CHILDREN_ENV, ProcessExecutor  # noqa: E402
from kubenas.storage.local import LocalStore  # noqa: E402

QUICKSTART = REPO / "examples" / "quickstart.yaml"
POLL_SECONDS = 0.02


def architectures(n: int) -> list[Architecture]:
    """n small, distinct CNNs (2-3 layers, quickstart's choices)."""
    out = []
    for i in range(n):
        layers = []
        for j in range(2 + i % 2):
            layers.append({"name": f"l{j + 1}", "inputs": [f"l{j}"] if j else [],
                           "filter_height": (1, 3, 5)[(i + j) % 3],
                           "filter_width": (3, 5, 1)[(i + 2 * j) % 3],
                           "num_filters": (8, 16, 24)[(i + j) % 3]})
        out.append(Architecture.from_dict({"space": "cnn", "spec": {"layers": layers}}))
    return out


def run_children(warm: bool, archs: list[Architecture], trainer: dict, parallelism: int,
                 root: Path) -> dict:
    """Every architecture through one executor, ``parallelism`` at a time."""
    workdir = root / ("children-warm" if warm else "children-cold")
    store = LocalStore(workdir / "store")
    ex = ProcessExecutor("bench", trainer, store, workdir, parallelism=parallelism, warm=warm)
    pending = [TrialRequest(f"bench-{i:05d}", a) for i, a in enumerate(archs)]
    t0 = time.monotonic()
    try:
        while pending or ex.in_flight():
            while pending and ex.free_slots() > 0:
                ex.submit(pending.pop(0))
            time.sleep(POLL_SECONDS)
    finally:
        ex.close()
    wall = time.monotonic() - t0
    overheads, startups, failed = [], [], []
    for tid, child_wall in sorted(ex.wall_seconds.items()):
        rec = json.loads(store.get(result_key(tid)))
        if rec["status"] != "succeeded":
            failed.append(f"{tid}: {rec['reason']}")
            continue
        overheads.append(child_wall - rec["timings"]["train_seconds"])
        startups.append(child_wall - rec["timings"]["total_seconds"])
    if failed:
        raise SystemExit("children failed:\n" + "\n".join(failed))
    return {"wall": wall, "overheads": overheads, "startups": startups}


def quickstart_file(trials: int, root: Path) -> Path:
    doc = yaml.safe_load(QUICKSTART.read_text())
    doc["spec"]["budget"]["maxTrials"] = trials
    path = root / f"quickstart-{trials}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def run_quickstart(warm: bool, exp_file: Path, root: Path) -> float:
    workdir = root / ("quickstart-warm" if warm else "quickstart-cold")
    env = dict(os.environ, **{CHILDREN_ENV: "warm" if warm else "cold"})
    cmd = [sys.executable, "-m", "kubenas", "run", str(exp_file), "--workdir", str(workdir),
           "--no-progress"]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True)
    wall = time.monotonic() - t0
    if proc.returncode != 0:
        raise SystemExit(f"kubenas run ({'warm' if warm else 'cold'}) failed:\n"
                         f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return wall


def describe(label: str, result: dict) -> str:
    o, s = result["overheads"], result["startups"]
    return (f"  {label}: {len(o)} children, wall {result['wall']:.1f} s; overhead per child "
            f"median {statistics.median(o):.2f} s, mean {statistics.mean(o):.2f} s, "
            f"max {max(o):.2f} s; of it outside the trainer (start, imports, exit) median "
            f"{statistics.median(s):.2f} s")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--children", type=int, default=8, help="children per mode (default 8)")
    ap.add_argument("--epochs", type=int, default=5, help="epochs per child (default 5)")
    ap.add_argument("--parallelism", type=int, default=2)
    ap.add_argument("--quickstart-trials", type=int, default=12,
                    help="trials of the quickstart per mode (default 12; 0: skip)")
    ap.add_argument("--full", action="store_true", help="the whole quickstart (48 trials)")
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args(argv)
    if args.children < 1 or args.epochs < 1 or args.parallelism < 1 or args.quickstart_trials < 0:
        ap.error("--children, --epochs and --parallelism must be >= 1, --quickstart-trials >= 0")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    trainer = {"dataset": {"name": "digits"}, "epochs": args.epochs, "batchSize": 64,
               "learningRate": 0.05, "rewardWindow": min(5, args.epochs)}
    figures: dict = {"cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="kubenas-local-overhead-") as tmp:
        root = Path(tmp)
        archs = architectures(args.children)
        print(f"children: {args.children} x {args.epochs} epochs on digits, "
              f"{args.parallelism} at a time, {os.cpu_count()} CPUs")
        for warm in (False, True):
            label = "warm" if warm else "cold"
            figures[f"children_{label}"] = r = run_children(warm, archs, trainer,
                                                            args.parallelism, root)
            print(describe(label, r), flush=True)
        trials = 48 if args.full else args.quickstart_trials
        if trials:
            exp_file = QUICKSTART if args.full else quickstart_file(trials, root)
            print(f"quickstart: `kubenas run` {exp_file.name}, {trials} trials")
            for warm in (False, True):
                label = "warm" if warm else "cold"
                figures[f"quickstart_{label}"] = wall = run_quickstart(warm, exp_file, root)
                print(f"  {label}: {wall:.1f} s", flush=True)
            print(f"  speed-up: {figures['quickstart_cold'] / figures['quickstart_warm']:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

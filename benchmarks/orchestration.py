"""Orchestration overhead of kubenas on the dev cluster, with an instant trainer.

The real pipeline (the chart's RBAC and operator environment, ``kubenas operator`` as a
process, the controller Deployment's pod running ``kubenas controller`` with REINFORCE and its
state in S3, Jobs placed by the real scheduler, pods run by the fake kubelet) with one change:
``KUBENAS_CHILD_COMMAND`` points at benchmarks/instant_child.py, which writes a valid result
record create-only and exits. So every second measured is orchestration:

* per trial, from the Trial's creation: to its Job's creation, to its pod Running, to its
  result applied to the policy (the controller state's ``appliedAt``), and from the result
  record's write to its application. Creation / Job / Running times are when this script's
  watches saw them (Kubernetes timestamps have 1 s resolution); ``appliedAt`` and the
  record's ``finished_at`` are the controller's and the child's clocks (same machine);
* Jobs created per second: sustained during the search (bounded by maxInFlight and the
  children's turnaround) and in a burst (N Trials made at once for an Experiment with no
  controller and a pool no node matches, so only the operator works);
* the peak RSS (VmHWM) of the operator process and of the controller pod's process.

    .venv/bin/python benchmarks/orchestration.py                 # 300 trials, own dev cluster
    KUBENAS_DEVENV_DIR=$PWD/.devenv .venv/bin/python benchmarks/orchestration.py --trials 50

It starts a dev cluster in a temporary directory (and stops it at the end) unless
KUBENAS_DEVENV_DIR names a running one, which it then uses (in a fresh namespace).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from devenv.cluster import DevCluster  # noqa: E402
from kubenas.controller.loop import read_ledger  # noqa: E402
from devenv.fake_kubelet import PROC_MARKER  # noqa: E402
from tests.e2e.harness import Install, Watcher, wait_for  # noqa: E402

INSTANT_CHILD = [sys.executable, str(REPO / "benchmarks" / "instant_child.py")]


def _ts(iso: str) -> float:
    return datetime.strptime(iso, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc).timestamp()


def _pct(values: list, q: float) -> float:
    v = sorted(values)
    if not v:
        return float("nan")
    k = (len(v) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def vm_hwm_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class Timeline:
    """First time this process saw, per trial: the Trial, its Job, its pod Running."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.trial: dict = {}
        self.job: dict = {}
        self.running: dict = {}

    def _first(self, table: dict, key, t: float) -> None:
        with self.lock:
            table.setdefault(key, t)

    def on_trial(self, etype, obj, t):
        if etype in ("ADDED", "MODIFIED", "RELIST"):
            self._first(self.trial, obj["metadata"]["name"], t)

    def on_job(self, etype, obj, t):
        name = (obj.get("metadata") or {}).get("annotations", {}).get("kubenas.dev/trial-name")
        if name and etype in ("ADDED", "MODIFIED", "RELIST"):
            self._first(self.job, name, t)

    def on_pod(self, etype, obj, t):
        name = (obj.get("metadata") or {}).get("annotations", {}).get("kubenas.dev/trial-name")
        if name and etype != "DELETED" and (obj.get("status") or {}).get("phase") == "Running":
            self._first(self.running, name, t)


def pools_spec(a: int, b: int, unschedulable: bool = False) -> list:
    sel = (lambda p: {"kubenas.dev/pool": "no-such-pool"}) if unschedulable else \
        (lambda p: {"kubenas.dev/pool": p})
    return [{"name": "pool-a", "nodeSelector": sel("pool-a"), "gpusPerTrial": 0, "maxInFlight": a,
             "resources": {"cpu": "50m", "memory": "64Mi"}},
            {"name": "pool-b", "nodeSelector": sel("pool-b"), "gpusPerTrial": 0, "maxInFlight": b,
             "resources": {"cpu": "50m", "memory": "64Mi"}}]


def experiment_spec(trials: int, pools: list, **over) -> dict:
    spec = {
        "search": {"space": "cnn", "strategy": "reinforce", "seed": 0,
                   "spaceOptions": {"filterHeights": [1, 3], "filterWidths": [1, 3],
                                    "numFilters": [16, 32, 64],
                                    "curriculum": {"startLayers": 2, "stepLayers": 1,
                                                   "everySamples": 100, "maxLayers": 4}},
                   "strategyOptions": {"learningRate": 0.01}},
        "budget": {"maxTrials": trials},
        "trainer": {"dataset": {"name": "digits"}, "epochs": 1},
        "workerPools": pools,
        "jobSettings": {"backoffLimit": 2, "ttlSecondsAfterFinished": 3600},
    }
    spec.update(over)
    return spec


def run_search(inst: Install, args, say) -> dict:
    from kubenas.operator.kube import core_path, custom_path, jobs_path

    tl = Timeline()
    watchers = [Watcher(inst.kube, custom_path("trials", inst.ns), tl.on_trial, name="w-trials"),
                Watcher(inst.kube, jobs_path(inst.ns), tl.on_job, name="w-jobs"),
                Watcher(inst.kube, core_path("pods", inst.ns), tl.on_pod,
                        "app.kubernetes.io/component=trial", name="w-pods")]
    for w in watchers:
        w.start()
    name = "orch"
    rss = {"controller": 0, "controller_pid": None}
    done = threading.Event()

    def sample_controller_rss():
        pods_dir = inst.cluster.pods_dir
        while not done.wait(0.5):
            for marker in pods_dir.glob(f"{inst.ns}_kubenas-controller-{name}-*/{PROC_MARKER}"):
                try:
                    pid = int(marker.read_text().split()[0])
                except (OSError, ValueError, IndexError):
                    continue
                kib = vm_hwm_kib(pid)
                if kib > rss["controller"]:
                    rss["controller"], rss["controller_pid"] = kib, pid

    sampler = threading.Thread(target=sample_controller_rss, daemon=True)
    sampler.start()
    t0 = time.time()
    inst.create_experiment(name, experiment_spec(args.trials, pools_spec(args.pool_a, args.pool_b)))
    last = [0, time.monotonic()]

    def finished():
        st = inst.experiment(name).get("status") or {}
        n = st.get("trialsCompleted", 0)
        if n >= last[0] + 50:
            say(f"{n}/{args.trials} trials done ({time.time() - t0:.0f}s)")
            last[0] = n
        return st.get("phase") in ("Succeeded", "Failed")

    wait_for(finished, args.timeout, "the search to finish", interval=1.0,
             on_timeout=lambda: inst.kubectl("get", "experiments") + inst.operator_log()[-3000:])
    t_end = time.time()
    done.set()
    sampler.join(5)
    for w in watchers:
        w.stop()
    status = inst.experiment(name)["status"]
    store = inst.store(name)
    raw_state = store.get("controller/state.json")
    state = read_ledger(store)         # the state plus its per-trial applied/ documents
    finished_at = {}
    for key in store.list("results/"):
        rec = json.loads(store.get(key))
        finished_at[rec["trial_id"]] = _ts(rec["timings"]["finished_at"])
    applied = {t: _ts(a["appliedAt"]) for t, a in state["applied"].items()}
    ids = sorted(applied)
    missing = [t for t in ids if t not in tl.trial or t not in tl.job or t not in tl.running]
    ok = [t for t in ids if t not in missing]

    def lat(a: dict, b: dict) -> list:
        return [b[t] - a[t] for t in ok if t in a and t in b]

    job_times = sorted(tl.job[t] for t in ids if t in tl.job)
    span = job_times[-1] - job_times[0] if len(job_times) > 1 else float("nan")
    return {
        "trials": len(ids), "phase": status.get("phase"), "policy_version": status.get("policyVersion"),
        "best_reward": status.get("bestReward"), "wall_seconds": t_end - t0,
        "trials_per_second": len(ids) / (t_end - t0),
        "missing_timeline": len(missing),
        "trial_to_job": lat(tl.trial, tl.job),
        "trial_to_running": lat(tl.trial, tl.running),
        "trial_to_applied": lat(tl.trial, applied),
        "result_to_applied": lat(finished_at, applied),
        "running_to_result": lat(tl.running, finished_at),
        "jobs_per_second_sustained": (len(job_times) - 1) / span if span == span and span > 0 else None,
        "controller_vm_hwm_kib": rss["controller"],
        "state_bytes": len(raw_state),
    }


def run_burst(inst: Install, args, say) -> dict:
    """N Trials at once for an Experiment without a controller (replicas 0) whose pools no
    node matches (pods stay Pending: nothing runs), maxInFlight N: only the operator works."""
    from kubenas.operator.kube import custom_path, jobs_path
    from tests.operator.objects import CNN_ARCH

    tl = Timeline()
    w = Watcher(inst.kube, jobs_path(inst.ns), tl.on_job, "kubenas.dev/experiment=burst",
                name="w-burst").start()
    n = args.burst
    exp = inst.create_experiment("burst", experiment_spec(
        n, pools_spec(n, 1, unschedulable=True), controller={"replicas": 0}))
    wait_for(lambda: (inst.experiment("burst").get("status") or {}).get("phase"), 30,
             "the operator to accept the burst experiment")
    owner = {"apiVersion": "kubenas.dev/v1", "kind": "Experiment", "name": "burst",
             "uid": exp["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}

    def make(i: int) -> float:
        inst.kube.create(custom_path("trials", inst.ns), {
            "apiVersion": "kubenas.dev/v1", "kind": "Trial",
            "metadata": {"name": f"burst-{i:05d}", "ownerReferences": [owner],
                         "labels": {"kubenas.dev/experiment": "burst"}},
            "spec": {"experiment": "burst", "pool": "pool-a", "architecture": CNN_ARCH}})
        return time.time()

    t0 = time.time()
    with ThreadPoolExecutor(8) as pool:
        created = list(pool.map(make, range(n)))
    t_created = max(created)
    wait_for(lambda: len(tl.job) >= n, 120, f"{n} Jobs")
    w.stop()
    t_last = max(tl.job.values())
    say(f"burst: {n} Trials created in {t_created - t0:.1f}s, their {n} Jobs by +{t_last - t0:.1f}s")
    inst.kubectl("delete", "experiment", "burst", "--wait=false")
    return {"burst_trials": n, "burst_create_seconds": t_created - t0,
            "burst_jobs_seconds": t_last - t0, "jobs_per_second_burst": n / (t_last - t0)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=300)
    ap.add_argument("--pool-a", type=int, default=6, help="maxInFlight of pool-a (default 6)")
    ap.add_argument("--pool-b", type=int, default=3, help="maxInFlight of pool-b (default 3)")
    ap.add_argument("--burst", type=int, default=100, help="Trials in the burst (0: skip)")
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--json", help="also write the figures (and raw latencies) here")
    ap.add_argument("--simulated-children", type=float, default=None, metavar="SECONDS",
                    help="no child process at all: the nodes simulate each trial pod for SECONDS "
                         "and write its result (devenv/simnode.py), on 8 large simulated nodes")
    args = ap.parse_args(argv)
    t_start = time.monotonic()

    def say(msg):
        print(f"[orchestration +{time.monotonic() - t_start:5.0f}s] {msg}", flush=True)

    own = None
    cluster = None
    if os.environ.get("KUBENAS_DEVENV_DIR") and args.simulated_children is None:
        c = DevCluster(os.environ["KUBENAS_DEVENV_DIR"])
        if c.running() and c.node_mode == "simulated":
            cluster = c
            cluster.apply_crds()
            say(f"using the running dev cluster in {c.state_dir}")
    tmp = tempfile.TemporaryDirectory(prefix="kubenas-orch-")
    if cluster is None:
        # simulated nodes: a pod per trial with an instant child, no image, no kubelet
        pools = None
        if args.simulated_children is not None:
            os.environ["KUBENAS_SIM_CHILD_SECONDS"] = str(args.simulated_children)
            pools = "pool-a:4:0:64:256Gi,pool-b:4:0:64:256Gi"
        own = cluster = DevCluster(Path(tmp.name) / "devenv", pools=pools, nodes="simulated")
        say("starting a dev cluster")
        cluster.up(quiet=True)
    ns = cluster.create_namespace("orch")
    inst = Install(cluster, ns, Path(tmp.name) / "work")
    try:
        inst.install()
        simulated = args.simulated_children is not None
        inst.start_operator({} if simulated else {"KUBENAS_CHILD_COMMAND": json.dumps(INSTANT_CHILD)})
        op_pid = inst.operator_proc.pid
        say(f"namespace {ns}; operator pid {op_pid}; {args.trials} trials, maxInFlight "
            f"pool-a {args.pool_a} + pool-b {args.pool_b}, "
            + (f"simulated children ({args.simulated_children:g} s)" if simulated else "instant child"))
        out = run_search(inst, args, say)
        if args.burst:
            out.update(run_burst(inst, args, say))
        out["operator_vm_hwm_kib"] = vm_hwm_kib(op_pid)
    finally:
        inst.close()
        cluster.delete_namespace(ns)
        if own is not None:
            own.down(quiet=True)
        tmp.cleanup()

    def row(label, values):
        return (f"  {label:34s} p50 {_pct(values, 0.5):6.2f}s   p95 {_pct(values, 0.95):6.2f}s   "
                f"max {max(values):6.2f}s   (n={len(values)})")

    print(f"\norchestration: {out['trials']} trials, phase {out['phase']}, policy version "
          f"{out['policy_version']}, best reward {out['best_reward']}")
    print(f"  wall {out['wall_seconds']:.0f}s: {out['trials_per_second']:.2f} trials/s with "
          f"maxInFlight {args.pool_a}+{args.pool_b}"
          + (f"; {out['missing_timeline']} trials missing from the watch timeline"
             if out["missing_timeline"] else ""))
    print(row("Trial created -> Job created", out["trial_to_job"]))
    print(row("Trial created -> pod Running", out["trial_to_running"]))
    print(row("Trial created -> result applied", out["trial_to_applied"]))
    print(row("pod Running -> result written", out["running_to_result"]))
    print(row("result written -> result applied", out["result_to_applied"]))
    if out.get("jobs_per_second_sustained"):
        print(f"  Jobs created per second, sustained: {out['jobs_per_second_sustained']:.2f}")
    if args.burst:
        print(f"  Jobs created per second, burst:     {out['jobs_per_second_burst']:.1f} "
              f"({out['burst_trials']} Trials made in {out['burst_create_seconds']:.1f}s, all "
              f"their Jobs {out['burst_jobs_seconds']:.1f}s after the first Trial)")
    print(f"  controller state in S3: {out['state_bytes'] / 1e6:.2f} MB (one compare-and-swap "
          f"write per sample and per applied result)")
    print(f"  peak RSS (VmHWM): operator {out['operator_vm_hwm_kib'] / 1024:.0f} MiB, "
          f"controller {out['controller_vm_hwm_kib'] / 1024:.0f} MiB")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

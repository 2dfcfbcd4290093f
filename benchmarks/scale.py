"""Paper scale on the dev control plane: N trials with M in flight on simulated nodes, with chaos.

The real pipeline (the chart's RBAC and operator environment, ``kubenas operator`` as a local
process, the controller Deployment's pod running ``kubenas controller`` with REINFORCE on the
paper's CNN space, Jobs placed by the real scheduler and completed by the real job controller)
on simulated nodes (devenv/simnode.py, scale tests only): a trial pod runs no process, it is
Running for ``--child-seconds`` and then its node writes the trial's result record create-only,
as a child would. Every S3 request of the experiment (operator, controller, nodes) goes
through a counting proxy in this process (``--no-count-s3``: straight to SeaweedFS).

Printed at n = 100, 1,000, 5,000, 12,800 applied results (those <= N): per applied result in
the interval since the previous mark, the controller's CPU seconds, bytes it wrote (wchar: S3,
API and log writes) and S3 requests; the state's size; operator and controller RSS. Overall:
trials/s sustained, p50/p95 Trial created -> Job created -> result applied.

Chaos (flags): SIGKILL the controller and the operator K times each at random moments,
restart S3, write corrupted result records for trials about to be sampled. At the end it
checks and prints: every trial applied exactly once, optimizer steps = succeeded rewards /
(m*G), 0 duplicate Jobs, 0 orphan Jobs, the corrupted ones failed with their reasons.

    .venv/bin/python benchmarks/scale.py                                   # 12,800 / 800
    .venv/bin/python benchmarks/scale.py --trials 1500 --in-flight 300 \\
        --kill-controller 3 --kill-operator 3 --restart-s3 1 --corrupt 5   # the CI size

Exit status 1 when a check fails. tests/scale/test_scale.py runs the CI size.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import signal
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable, Optional
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.orchestration import Timeline, _pct, _ts, vm_hwm_kib  # noqa: E402
from devenv.cluster import DevCluster  # noqa: E402
from devenv.fake_kubelet import PROC_MARKER  # noqa: E402
from kubenas.controller.spaces import make_space  # noqa: E402
from tests.e2e.harness import Install, Watcher, wait_for  # noqa: E402
from tests.operator.objects import CNN_ARCH  # noqa: E402

MARKS = (100, 1000, 5000, 12800)
CI_IN_FLIGHT = 200          # tests/scale: in flight, and what its simulated nodes are sized for
EXPERIMENT = "scale"


# -- S3 request counting --------------------------------------------------------------------
class _Forward(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    hop = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "expect"}

    def log_message(self, *a) -> None:  # quiet
        pass

    def _upstream(self) -> http.client.HTTPConnection:
        conn = getattr(self, "_conn", None)
        if conn is None:
            host, port = self.server.upstream
            conn = self._conn = http.client.HTTPConnection(host, port, timeout=60)
        return conn

    def _relay(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        self.server.count(self.command, length)
        try:
            conn = self._upstream()
            conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for k, v in self.headers.items():
                if k.lower() not in self.hop:
                    conn.putheader(k, v)
            conn.endheaders(body)
            resp = conn.getresponse()
            data = resp.read()
        except OSError as exc:          # S3 down (a chaos restart): the client retries
            self._conn = None
            return self._reply(502, [], f"upstream: {exc}".encode())
        self._reply(resp.status, [(k, v) for k, v in resp.getheaders()
                                  if k.lower() not in self.hop | {"content-length"}], data)

    def _reply(self, status: int, headers: list, data: bytes) -> None:
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _relay


class S3Counter(ThreadingHTTPServer):
    """A loopback HTTP proxy in front of SeaweedFS that counts requests and uploaded bytes
    (SigV4 signs the Host header: it is forwarded as the client sent it)."""

    daemon_threads = True

    def __init__(self, upstream: str) -> None:
        u = urlsplit(upstream)
        self.upstream = (u.hostname, u.port)
        self.lock = threading.Lock()
        self.requests: dict = {}
        self.bytes_up = 0
        super().__init__(("127.0.0.1", 0), _Forward)
        threading.Thread(target=self.serve_forever, name="s3-counter", daemon=True).start()

    def handle_error(self, request, client_address) -> None:
        # a SIGKILLed controller or child drops its connection mid-request: expected chaos,
        # not worth a traceback in the run's log; anything else is still printed
        if not isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            super().handle_error(request, client_address)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def count(self, method: str, length: int) -> None:
        with self.lock:
            self.requests[method] = self.requests.get(method, 0) + 1
            self.bytes_up += length

    def total(self) -> int:
        with self.lock:
            return sum(self.requests.values())


# -- process figures ------------------------------------------------------------------------
def proc_figures(pid: int) -> Optional[dict]:
    """CPU seconds (user+system), bytes written (wchar) and VmRSS (KiB) of a live process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        io = dict(line.split(": ") for line in Path(f"/proc/{pid}/io").read_text().splitlines())
        rss = next(int(line.split()[1]) for line in Path(f"/proc/{pid}/status").read_text()
                   .splitlines() if line.startswith("VmRSS:"))
    except (OSError, StopIteration, ValueError, IndexError):
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    return {"cpu": (int(stat[11]) + int(stat[12])) / ticks, "wchar": int(io["wchar"]),
            "rss_kib": rss}


class ControllerProcs:
    """The controller pod's processes (one per start: a SIGKILL is restarted by the node),
    their last seen CPU and wchar summed over all of them."""

    def __init__(self, inst: Install) -> None:
        self.inst = inst
        self.last: dict = {}     # pid -> last figures
        self.hwm_kib = 0

    def pids(self) -> list:
        out = []
        for marker in self.inst.cluster.pods_dir.glob(
                f"{self.inst.ns}_kubenas-controller-{EXPERIMENT}-*/{PROC_MARKER}"):
            try:
                out.append(int(marker.read_text().split()[0]))
            except (OSError, ValueError, IndexError):
                continue
        return out

    def sample(self) -> dict:
        rss = 0
        for pid in self.pids():
            fig = proc_figures(pid)
            if fig is not None:
                self.last[pid] = fig
                rss = max(rss, fig["rss_kib"])
                self.hwm_kib = max(self.hwm_kib, vm_hwm_kib(pid))
        return {"cpu": sum(f["cpu"] for f in self.last.values()),
                "wchar": sum(f["wchar"] for f in self.last.values()), "rss_kib": rss}

    def kill(self) -> bool:
        pids = [p for p in self.pids() if proc_figures(p) is not None]
        for pid in pids:
            self.sample()
            os.kill(pid, signal.SIGKILL)
        return bool(pids)


def _children() -> dict:
    """{ppid: [pid, ...]} of every live process."""
    kids: dict = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        kids.setdefault(ppid, []).append(int(stat.parent.name))
    return kids


class ComponentCpu:
    """CPU seconds of each part of the system (the control plane's daemons, S3, the nodes,
    operator, controller, this benchmark process): each process and its descendants, from
    each one's last sample, so a killed and restarted process counts both of its lives.
    This says where a trial's cost goes, and so how many cores a target rate needs."""

    def __init__(self, inst: Install, ctl: ControllerProcs) -> None:
        self.inst, self.ctl = inst, ctl
        self.last: dict = {}      # (component, pid) -> cpu seconds
        self.start: dict = {}

    def _roots(self) -> dict:
        roots = {name: [d.pid] for name, d in self.inst.cluster.daemons.items()}
        if self.inst.operator_proc is not None:
            roots["operator"] = [self.inst.operator_proc.pid]
        roots["controller"] = self.ctl.pids()
        roots["benchmark"] = [os.getpid()]
        return roots

    def sample(self) -> dict:
        kids, roots = _children(), self._roots()
        owned = {pid for pids in roots.values() for pid in pids}
        for comp, pids in roots.items():
            stack = list(pids)
            while stack:
                pid = stack.pop()
                fig = proc_figures(pid)
                if fig is not None:
                    self.last[(comp, pid)] = fig["cpu"]
                stack.extend(k for k in kids.get(pid, ()) if k not in owned)
        return self.totals()

    def totals(self) -> dict:
        out: dict = {}
        for (comp, _), cpu in self.last.items():
            out[comp] = out.get(comp, 0.0) + cpu
        return out

    def begin(self) -> None:
        self.start = self.sample()

    def spent(self) -> dict:
        end = self.sample()
        return {c: end[c] - self.start.get(c, 0.0) for c in sorted(end)}


# -- corrupted records ----------------------------------------------------------------------
def corrupted_record(tid: str, variant: int) -> tuple[bytes, str]:
    """The bytes of a broken result record for ``tid`` and what is wrong with it."""
    good = {"experiment": EXPERIMENT, "trial_id": tid, "status": "succeeded", "reward": 0.5,
            "reason": None, "architecture": CNN_ARCH,
            "timings": {"started_at": "2026-01-01T00:00:00.000000Z",
                        "finished_at": "2026-01-01T00:00:01.000000Z"}}
    kinds = [("not JSON", None), ("reward is a list", {"reward": [1]}),
             ("timings is a number", {"timings": 5}), ("reward out of range", {"reward": 1e9}),
             ("names another trial", {"trial_id": tid + "x"})]
    what, change = kinds[variant % len(kinds)]
    if change is None:
        return b'{"trial_id": "' + tid.encode() + b'", "reward": 0.', what
    return json.dumps({**good, **change}).encode(), what


# -- the run --------------------------------------------------------------------------------
@dataclass
class Run:
    inst: Install
    args: argparse.Namespace
    say: Callable
    direct: object                       # the experiment's store, straight to SeaweedFS
    timeline: Timeline = field(default_factory=Timeline)
    jobs_by_trial: dict = field(default_factory=dict)
    marks: list = field(default_factory=list)
    chaos_log: list = field(default_factory=list)
    corrupted: dict = field(default_factory=dict)   # trial id -> what is wrong
    applied: int = 0
    done: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def on_job(self, etype, obj, t) -> None:
        self.timeline.on_job(etype, obj, t)
        meta = obj.get("metadata") or {}
        name = (meta.get("annotations") or {}).get("kubenas.dev/trial-name")
        if name and meta.get("uid"):
            with self.lock:
                self.jobs_by_trial.setdefault(name, set()).add(meta["uid"])

    def max_trial_seen(self) -> int:
        with self.timeline.lock:
            names = list(self.timeline.trial)
        return max((int(n.rsplit("-", 1)[1]) for n in names), default=-1)


def experiment_spec(args) -> dict:
    """REINFORCE on the paper's CNN space (its defaults), M in flight over two pools."""
    half = args.in_flight // 2
    pools = [{"name": name, "nodeSelector": {"kubenas.dev/pool": name}, "gpusPerTrial": 0,
              "maxInFlight": n, "resources": {"cpu": "10m", "memory": "16Mi"}}
             for name, n in (("pool-a", args.in_flight - half), ("pool-b", half))]
    return {"search": {"space": "cnn", "strategy": "reinforce", "seed": args.seed},
            "budget": {"maxTrials": args.trials},
            "trainer": {"dataset": {"name": "digits"}, "epochs": 1},
            "workerPools": pools}


def read_state(run: Run) -> Optional[dict]:
    try:
        raw = run.direct.get("controller/state.json")
    except Exception:  # noqa: BLE001 - not there yet, or S3 restarting
        return None
    state = json.loads(raw)
    state["_bytes"] = len(raw)
    return state


def record_mark(run: Run, n: int, state: dict, ctl: ControllerProcs, op_pid: int, s3) -> None:
    fig = ctl.sample()
    op = proc_figures(op_pid) or {"rss_kib": 0}
    run.marks.append({"n": n, "applied": state["counts"]["applied"], "t": time.time(),
                      "controller_cpu": fig["cpu"], "controller_wchar": fig["wchar"],
                      "controller_rss_kib": fig["rss_kib"], "operator_rss_kib": op["rss_kib"],
                      "operator_hwm_kib": vm_hwm_kib(op_pid), "state_bytes": state["_bytes"],
                      "s3_requests": s3.total() if s3 else None})
    run.say(f"n={n}: {state['counts']['applied']} applied, state {state['_bytes'] / 1e3:.0f} kB, "
            f"operator RSS {op['rss_kib'] / 1024:.0f} MiB, controller RSS "
            f"{fig['rss_kib'] / 1024:.0f} MiB, controller CPU {fig['cpu']:.0f}s")


def mark_now(run: Run, ctl: ControllerProcs, s3) -> None:
    """A last mark where the run stopped, if it passed none since the last one."""
    state = read_state(run)
    if state is not None and state["counts"]["applied"] > run.marks[-1].get("applied", 0):
        record_mark(run, state["counts"]["applied"], state, ctl, run.inst.operator_proc.pid, s3)


def monitor(run: Run, ctl: ControllerProcs, s3, cpu: "ComponentCpu") -> None:
    """Samples the controller's processes and records a mark when n crosses one."""
    marks = [m for m in MARKS if m < run.args.trials] + [run.args.trials]
    start = {"n": 0, "applied": 0, "t": time.time(), "s3_requests": s3.total() if s3 else None,
             **{f"controller_{k}": v for k, v in ctl.sample().items() if k != "rss_kib"}}
    run.marks.append(start)
    ticks = 0
    while not run.done.wait(0.5):
        ctl.sample()
        ticks += 1
        if ticks % 4 == 0:
            cpu.sample()
        state = read_state(run)
        if state is None:
            continue
        run.applied = state["counts"]["applied"]
        while marks and run.applied >= marks[0]:
            record_mark(run, marks.pop(0), state, ctl, run.inst.operator_proc.pid, s3)


# -- chaos ----------------------------------------------------------------------------------
def chaos_plan(args, rng: random.Random) -> list:
    events = (["kill-controller"] * args.kill_controller + ["kill-operator"] * args.kill_operator
              + ["restart-s3"] * args.restart_s3 + ["corrupt"] * args.corrupt)
    # corrupted records go to trials not sampled yet: early enough that there are some
    return sorted((rng.uniform(0.03, 0.5 if e == "corrupt" else 0.85) * args.trials, e)
                  for e in events)


def corrupt_one(run: Run, rng: random.Random) -> Optional[str]:
    """A broken record for a trial not sampled yet (so it is there before any pod's)."""
    from kubenas.storage import AlreadyExists

    for _ in range(20):
        index = run.max_trial_seen() + rng.randint(run.args.in_flight // 4 + 5,
                                                   run.args.in_flight // 2 + 30)
        if index >= run.args.trials:
            index = rng.randint(run.max_trial_seen() + 1, run.args.trials - 1) \
                if run.max_trial_seen() + 1 < run.args.trials else None
        if index is None:
            return None
        tid = f"{EXPERIMENT}-{index:05d}"
        if tid in run.corrupted:
            continue
        data, what = corrupted_record(tid, len(run.corrupted))
        try:
            run.direct.put_new(f"results/{tid}.json", data)
        except AlreadyExists:
            continue
        run.corrupted[tid] = what
        return f"{tid} ({what})"
    return None


def start_operator(inst: Install, tries: int = 3) -> str:
    """Start the operator process; one that exits at once (see its log) is started again."""
    for attempt in range(tries):
        proc = inst.start_operator()
        time.sleep(3.0)
        if proc.poll() is None:
            return f"restarted as pid {proc.pid}" + (f" (start {attempt + 1})" if attempt else "")
    return f"NOT restarted: exited {proc.returncode} {tries} times (see {inst.workdir}/operator.log)"


def do_chaos(run: Run, event: str, ctl: ControllerProcs, rng: random.Random) -> str:
    if event == "kill-controller":   # after a kill, the node restarts it with a back-off
        try:
            wait_for(lambda: any(proc_figures(p) for p in ctl.pids()), 60, "a running controller")
        except AssertionError:
            pass
        return "controller SIGKILL" if ctl.kill() else "controller not running: skipped"
    if event == "kill-operator":
        run.inst.kill_operator(signal.SIGKILL)
        time.sleep(rng.uniform(0.2, 3.0))
        return "operator SIGKILL, " + start_operator(run.inst)
    if event == "restart-s3":
        run.inst.cluster.s3.restart(down_seconds=rng.uniform(1.0, 4.0))
        return "S3 restarted"
    return f"corrupted record {corrupt_one(run, rng)}"


def chaos(run: Run, ctl: ControllerProcs) -> None:
    rng = random.Random(run.args.seed + 1)
    for at, event in chaos_plan(run.args, rng):
        while run.applied < at:
            if run.done.wait(0.2):
                return
        what = do_chaos(run, event, ctl, rng)
        run.chaos_log.append({"at_applied": run.applied, "event": event, "what": what})
        run.say(f"chaos at {run.applied} applied: {what}")


# -- the end: what happened -----------------------------------------------------------------
def read_applied(run: Run) -> dict:
    """trial id -> its applied/ document (None where there is none), read in parallel."""
    from kubenas.storage import NotFound

    def one(i: int):
        tid = f"{EXPERIMENT}-{i:05d}"
        for attempt in range(5):
            try:
                return tid, json.loads(run.direct.get(f"applied/{tid}.json"))
            except NotFound:
                return tid, None
            except Exception:  # noqa: BLE001 - S3 busy: again
                time.sleep(0.5 * (attempt + 1))
        return tid, None

    with ThreadPoolExecutor(16) as pool:
        return dict(pool.map(one, range(run.args.trials)))


def check_applied(run: Run, state: dict, applied: dict, trials: list) -> list:
    n, failures = run.args.trials, []
    counts = state["counts"]
    if counts["applied"] != n or state["nextIndex"] != n:
        failures.append(f"applied {counts['applied']}, sampled {state['nextIndex']}, want {n} each")
    if state["appliedRanges"] != [[0, n]] or state["pending"]:
        failures.append(f"applied ranges {state['appliedRanges'][:5]}, "
                        f"{len(state['pending'])} still pending")
    missing = [t for t, d in applied.items() if d is None or d.get("trial_id") != t]
    if missing:
        failures.append(f"{len(missing)} trials without their applied/ document: {missing[:5]}")
    names = [t["metadata"]["name"] for t in trials]
    unfinished = [t["metadata"]["name"] for t in trials
                  if (t.get("status") or {}).get("phase") not in ("Succeeded", "Failed")]
    if len(names) != n or len(set(names)) != n or unfinished:
        failures.append(f"{len(names)} Trials ({len(set(names))} names), want {n}; "
                        f"unfinished: {unfinished[:5]}")
    return failures


def check_steps(state: dict) -> tuple[dict, list]:
    strat = state["strategy"]
    opts = strat["options"]
    per_step = int(opts.get("batchSize", 1)) * int(opts.get("accumulate", 1))
    ok = state["counts"]["succeeded"]
    if opts.get("failureReward") is not None:
        ok = state["counts"]["applied"]
    want = ok // per_step
    fig = {"optimizer_steps": strat["version"], "rewards_told": ok, "m_times_G": per_step}
    bad = [] if strat["version"] == want else [
        f"optimizer steps {strat['version']}, want {ok} rewards / {per_step} = {want}"]
    return fig, bad


def check_jobs(run: Run, jobs: list, trials: list) -> tuple[dict, list]:
    uid_of = {t["metadata"]["name"]: t["metadata"]["uid"] for t in trials}
    dups = {t: len(u) for t, u in run.jobs_by_trial.items() if len(u) > 1}
    orphans = []
    for job in jobs:
        meta = job["metadata"]
        trial = (meta.get("annotations") or {}).get("kubenas.dev/trial-name")
        owners = {o.get("uid") for o in meta.get("ownerReferences") or []}
        if trial not in uid_of or uid_of[trial] not in owners or (job.get("status") or {}).get("active"):
            orphans.append(meta["name"])
    fig = {"jobs_seen": sum(len(u) for u in run.jobs_by_trial.values()),
           "jobs_left": len(jobs), "duplicate_jobs": len(dups), "orphan_jobs": len(orphans)}
    bad = ([f"duplicate Jobs for {list(dups.items())[:5]}"] if dups else []) + \
        ([f"orphan Jobs: {orphans[:5]}"] if orphans else [])
    return fig, bad


def check_failed(run: Run, applied: dict) -> tuple[dict, list]:
    failed = {t: d.get("reason") for t, d in applied.items() if d and d.get("status") == "failed"}
    bad = [f"corrupted {t} ({what}) applied as {applied.get(t)}"
           for t, what in run.corrupted.items()
           if t not in failed or not failed[t]]
    other = {t: r for t, r in failed.items() if t not in run.corrupted}
    fig = {"failed": len(failed), "corrupted": {t: {"injected": w, "reason": failed.get(t)}
                                                for t, w in run.corrupted.items()},
           "other_failed": dict(list(other.items())[:10]), "other_failed_count": len(other)}
    return fig, bad


def latencies(run: Run, applied: dict) -> dict:
    tl = run.timeline
    at = {t: _ts(d["appliedAt"]) for t, d in applied.items() if d}
    ok = [t for t in at if t in tl.trial and t in tl.job]
    return {"trial_to_job": [tl.job[t] - tl.trial[t] for t in ok],
            "job_to_applied": [at[t] - tl.job[t] for t in ok],
            "trial_to_applied": [at[t] - tl.trial[t] for t in ok],
            "timeline_missing": len(at) - len(ok)}


def settle_jobs(inst: Install, timeout: float = 60.0) -> list:
    """The namespace's trial Jobs once none is active (the last pods finishing)."""
    def quiet():
        jobs = inst.list("jobs", "kubenas.dev/experiment=" + EXPERIMENT)
        return jobs if not any((j.get("status") or {}).get("active") for j in jobs) else None
    try:
        return wait_for(quiet, timeout, "the trial Jobs to finish", interval=1.0)
    except AssertionError:
        return inst.list("jobs", "kubenas.dev/experiment=" + EXPERIMENT)


def conclude(run: Run) -> dict:
    state = read_state(run)
    applied = read_applied(run)
    trials = run.inst.list("trials")
    jobs = settle_jobs(run.inst)
    failures = check_applied(run, state, applied, trials)
    out = {"state_bytes": state["_bytes"], "counts": state["counts"]}
    for fig, bad in (check_steps(state), check_jobs(run, jobs, trials), check_failed(run, applied)):
        out.update(fig)
        failures += bad
    out.update(latencies(run, applied))
    failures += [f"chaos event not done: {c['what']}" for c in run.chaos_log
                 if "NOT" in c["what"] or "skipped" in c["what"] or c["what"].endswith("None")]
    out["failures"] = failures
    return out


# -- running it -----------------------------------------------------------------------------
def search(run: Run, ctl: ControllerProcs, s3, cpu: ComponentCpu) -> None:
    from kubenas.operator.kube import custom_path, jobs_path

    inst = run.inst
    watchers = [Watcher(inst.kube, custom_path("trials", inst.ns), run.timeline.on_trial,
                        name="w-trials").start(),
                Watcher(inst.kube, jobs_path(inst.ns), run.on_job, name="w-jobs").start()]
    inst.create_experiment(EXPERIMENT, experiment_spec(run.args))
    threads = [threading.Thread(target=monitor, args=(run, ctl, s3, cpu), daemon=True, name="monitor"),
               threading.Thread(target=chaos, args=(run, ctl), daemon=True, name="chaos")]
    for t in threads:
        t.start()
    last = [0]

    def finished():
        if run.applied >= last[0] + max(100, run.args.trials // 20):
            last[0] = run.applied
            run.say(f"{run.applied}/{run.args.trials} applied")
        phase = (inst.experiment(EXPERIMENT).get("status") or {}).get("phase")
        return phase in ("Succeeded", "Failed") and run.applied >= run.args.trials

    try:
        wait_for(finished, run.args.timeout, "the search to finish", interval=1.0,
                 on_timeout=lambda: inst.kubectl("get", "experiments") + inst.operator_log()[-3000:])
    finally:
        run.done.set()
        for t in threads:
            t.join(30)
        for w in watchers:
            w.stop()


def run_scale(cluster, args, say) -> dict:
    """One run in a fresh namespace of ``cluster`` (simulated nodes); the figures and checks."""
    s3 = S3Counter(cluster.s3.endpoint) if args.count_s3 else None
    ns = cluster.create_namespace("scale")
    work = Path(tempfile.mkdtemp(prefix="kubenas-scale-"))
    # metrics off: on simulated nodes the controller pod shares the host's network and the
    # chart's one metrics port with the operator (a restarted operator could not bind it)
    values = {"metrics": {"enabled": False}, **({"storage": {"endpoint": s3.endpoint}} if s3 else {})}
    inst = Install(cluster, ns, work, values=values)
    try:
        inst.install()
        inst.start_operator()
        run = Run(inst, args, say, inst.store(EXPERIMENT))
        ctl = ControllerProcs(inst)
        say(f"namespace {ns}: {args.trials} trials, {args.in_flight} in flight, simulated "
            f"children {args.child_seconds:g}s, operator pid {inst.operator_proc.pid}")
        cpu = ComponentCpu(inst, ctl)
        cpu.begin()
        t0 = time.time()
        stopped = None
        try:
            search(run, ctl, s3, cpu)
        except (AssertionError, KeyboardInterrupt) as exc:   # timeout or SIGTERM: report so far
            stopped = f"stopped early at {run.applied} applied: {type(exc).__name__}: {str(exc)[:300]}"
            say(stopped)
            mark_now(run, ctl, s3)
        out = {"wall_seconds": time.time() - t0, "marks": run.marks, "chaos": run.chaos_log,
               "component_cpu": cpu.spent(),
               "s3": dict(s3.requests) if s3 else None, "s3_bytes_up": s3.bytes_up if s3 else None,
               "controller_hwm_kib": ctl.hwm_kib, "operator_hwm_kib": vm_hwm_kib(inst.operator_proc.pid)}
        out.update(conclude(run))
        if stopped:
            out["failures"].insert(0, stopped)
        return out
    finally:
        inst.close()
        cluster.delete_namespace(ns)
        if s3:
            s3.shutdown()


def sim_pools(in_flight: int) -> str:
    """Enough simulated nodes for M trial pods at 110 pods a node, plus the controller."""
    per_pool = max(1, -(-(in_flight // 2 + 20) // 100))
    return f"pool-a:{per_pool}:0:64:256Gi,pool-b:{per_pool}:0:64:256Gi"


# -- the report -----------------------------------------------------------------------------
def mean_depth(first: int, end: int) -> float:
    """The paper's depth curriculum (the CNN space's defaults) averaged over samples
    ``first..end-1``: the policy's work per result (one sample, one backward) follows it."""
    space = make_space("cnn")
    end = max(end, first + 1)  # two marks crossed in one poll: an empty window
    return sum(space.depth(i) for i in range(first, end)) / (end - first)


def table(out: dict) -> list:
    """Per interval between marks: cost per applied result (and per layer of the depth
    curriculum, which is what the policy's share follows); at each mark: sizes."""
    rows = [f"  {'n':>6s} {'layers':>6s} {'ctl CPU s/res':>13s} {'ms/res/layer':>12s} "
            f"{'ctl bytes/res':>13s} {'S3 req/res':>10s} "
            f"{'state kB':>8s} {'op RSS MiB':>10s} {'ctl RSS MiB':>11s} {'res/s':>6s}"]
    marks = out["marks"]
    for prev, m in zip(marks, marks[1:]):
        d = max(1, m["applied"] - prev["applied"])
        depth = mean_depth(prev["applied"], m["applied"])
        cpu = (m["controller_cpu"] - prev["controller_cpu"]) / d
        s3 = (f"{(m['s3_requests'] - prev['s3_requests']) / d:10.1f}"
              if m.get("s3_requests") is not None else f"{'-':>10s}")
        rows.append(f"  {m['n']:6d} {depth:6.1f} {cpu:13.4f} {1000 * cpu / depth:12.2f} "
                    f"{(m['controller_wchar'] - prev['controller_wchar']) / d:13.0f} {s3} "
                    f"{m['state_bytes'] / 1e3:8.0f} {m['operator_rss_kib'] / 1024:10.0f} "
                    f"{m['controller_rss_kib'] / 1024:11.0f} {d / max(1e-9, m['t'] - prev['t']):6.1f}")
    return rows


def cpu_rows(out: dict, args) -> list:
    """CPU seconds per trial by component, and the cores 50 trials/s would need at that cost."""
    spent = out.get("component_cpu") or {}
    if not spent:
        return []
    per = {c: v / max(1, out["counts"]["applied"]) for c, v in spent.items()}
    total = sum(per.values())
    parts = ", ".join(f"{c} {v * 1e3:.0f}" for c, v in sorted(per.items(), key=lambda kv: -kv[1])
                      if v * 1e3 >= 0.5)
    return [f"  CPU ms per trial (whole run): {total * 1e3:.0f} total = {parts}",
            f"  -> 50 trials/s at this cost needs {total * 50:.1f} cores; this machine has "
            f"{os.cpu_count()}, so its ceiling is ~{os.cpu_count() / total:.1f} trials/s"]


def report(out: dict, args) -> str:
    def row(label, values):
        if not values:
            return f"  {label:34s} (no data)"
        return (f"  {label:34s} p50 {_pct(values, 0.5):7.2f}s   p95 {_pct(values, 0.95):7.2f}s   "
                f"max {max(values):7.2f}s   (n={len(values)})")

    marks = out["marks"]
    first = next((m for m in marks if m["n"] >= 100), marks[-1])
    span = marks[-1]["t"] - first["t"]
    sustained = (marks[-1]["applied"] - first["applied"]) / span if span > 0 else float("nan")
    lines = [f"\nscale: {args.trials} trials, {args.in_flight} in flight, REINFORCE on the paper's "
             f"CNN space, simulated children {args.child_seconds:g}s; wall {out['wall_seconds']:.0f}s",
             *table(out),
             f"  trials/s: {out['counts']['applied'] / out['wall_seconds']:.2f} overall, {sustained:.2f} sustained "
             f"(from n={first['n']} to the end)",
             row("Trial created -> Job created", out["trial_to_job"]),
             row("Job created -> result applied", out["job_to_applied"]),
             row("Trial created -> result applied", out["trial_to_applied"]),
             f"  peak RSS (VmHWM): operator {out['operator_hwm_kib'] / 1024:.0f} MiB (last start), "
             f"controller {out['controller_hwm_kib'] / 1024:.0f} MiB",
             f"  S3 requests: {out['s3']}; per trial {sum((out['s3'] or {}).values()) / args.trials:.1f}"
             if out["s3"] else "  S3 requests: not counted (--no-count-s3)",
             *cpu_rows(out, args),
             f"  chaos: {len(out['chaos'])} events: " + "; ".join(
                 f"{c['what']} @{c['at_applied']}" for c in out["chaos"]),
             f"  applied {out['counts']['applied']} (succeeded {out['counts']['succeeded']}, failed "
             f"{out['counts']['failed']}); optimizer steps {out['optimizer_steps']} = "
             f"{out['rewards_told']} rewards / (m*G = {out['m_times_G']})",
             f"  Jobs: {out['jobs_seen']} seen, {out['duplicate_jobs']} duplicate, "
             f"{out['orphan_jobs']} orphan ({out['jobs_left']} left at the end)"]
    for tid, c in out["corrupted"].items():
        lines.append(f"  corrupted {tid} ({c['injected']}): failed, reason {c['reason']!r}")
    if out["other_failed_count"]:
        lines.append(f"  other failed trials: {out['other_failed_count']}, e.g. {out['other_failed']}")
    lines.append("  checks: " + ("all passed" if not out["failures"] else
                                 "FAILED:\n    " + "\n    ".join(out["failures"])))
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=12800)
    ap.add_argument("--in-flight", type=int, default=800, help="maxInFlight over both pools")
    ap.add_argument("--child-seconds", type=float, default=0.0,
                    help="how long a simulated trial pod runs (default 0: instant children)")
    ap.add_argument("--kill-controller", type=int, default=0, metavar="K")
    ap.add_argument("--kill-operator", type=int, default=0, metavar="K")
    ap.add_argument("--restart-s3", type=int, default=0, metavar="R")
    ap.add_argument("--corrupt", type=int, default=0, metavar="C", help="corrupted result records")
    ap.add_argument("--no-count-s3", dest="count_s3", action="store_false",
                    help="S3 straight to SeaweedFS (no counting proxy in this process)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=6 * 3600)
    ap.add_argument("--json", help="also write the figures (and raw latencies) here")
    return ap


def _interrupt(signum, _frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    t_start = time.monotonic()

    def say(msg):
        print(f"[scale +{time.monotonic() - t_start:6.0f}s] {msg}", flush=True)

    os.environ["KUBENAS_SIM_CHILD_SECONDS"] = str(args.child_seconds)
    # SIGTERM (timeout, pkill) unwinds like Ctrl-C, so the cluster below is taken down
    signal.signal(signal.SIGTERM, _interrupt)
    with tempfile.TemporaryDirectory(prefix="kubenas-scale-") as tmp:
        cluster = DevCluster(Path(tmp) / "devenv", pools=sim_pools(args.in_flight), nodes="simulated")
        say(f"starting a dev cluster with simulated nodes ({cluster.pools})")
        cluster.up(quiet=True)
        try:
            out = run_scale(cluster, args, say)
        finally:
            cluster.down(quiet=True)
    print(report(out, args))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 1 if out["failures"] else 0


if __name__ == "__main__":
    raise SystemExit(main())

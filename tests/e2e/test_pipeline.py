"""The whole pipeline on the dev cluster, for real: every pod is a container of the image
(`make image`) under a real kubelet: the chart's operator Deployment (``kubenas operator``,
its RBAC, securityContext and Secret references), the controller Deployment it makes
(``kubenas controller``: REINFORCE, state in S3), trial Jobs placed by the real scheduler on
the pools' nodes and run as ``kubenas train-child`` on digits, results and checkpoints in
SeaweedFS.

* one long search (12 trials over two pools) during which a running trial container is
  frozen between its first checkpoint and its result and its pod deleted, the controller pod
  is killed, the operator's container is SIGKILLed (the kubelet restarts it), one node's
  kubelet is stopped for a while and the S3 server is restarted; it must finish with nothing
  lost and nothing counted twice, within each pool's GPU capacity and maxInFlight; kubectl
  logs/exec and the metrics Services work along the way;
* a shorter search with two controller replicas sharing the policy by compare-and-swap;
* bad specs: what the CRD schema rejects (422) and what only the controller can tell
  (Valid=False / InvalidSpec naming the field, no Trials).

Children are tiny (digits, 2 epochs, 2-3 layers of 4-8 filters), so a child is mostly Python
and torch start-up. Marked ``k8s`` and ``slow``.
"""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from kubenas.contracts import ResultRecord, result_key
from kubenas.operator.kube import KubeError, custom_path
from kubenas.operator.naming import job_name

from tests.e2e.harness import Install, PodSampler, wait_for
from tests.operator.test_cluster import _table

pytestmark = [pytest.mark.k8s]

CONTROLLER = "app.kubernetes.io/component=controller"
TRIAL_PODS = "app.kubernetes.io/component=trial"


def digits_spec(max_trials: int, pools: list, **over) -> dict:
    spec = {
        "search": {
            "space": "cnn", "strategy": "reinforce", "seed": 0,
            "spaceOptions": {"filterHeights": [1, 3], "filterWidths": [1, 3], "numFilters": [4, 8],
                             "curriculum": {"startLayers": 2, "stepLayers": 1,
                                            "everySamples": 6, "maxLayers": 3}},
            # one optimizer step per result: the policy version counts the rewards applied
            "strategyOptions": {"learningRate": 0.01, "batchSize": 1, "accumulate": 1},
        },
        "budget": {"maxTrials": max_trials},
        "trainer": {"dataset": {"name": "digits"}, "epochs": 2, "batchSize": 32,
                    "learningRate": 0.2, "rewardWindow": 2, "numThreads": 1,
                    "saveModel": True},
        "workerPools": pools,
        # retries: the deleted pod's; a child that gives up while S3 restarts
        "jobSettings": {"backoffLimit": 3, "ttlSecondsAfterFinished": 3600},
    }
    spec.update(over)
    return spec


def pool(name: str, gpus: int, max_in_flight: int) -> dict:
    return {"name": name, "nodeSelector": {"kubenas.dev/pool": name}, "gpusPerTrial": gpus,
            "maxInFlight": max_in_flight, "resources": {"cpu": "250m", "memory": "1Gi"}}


# the dev cluster's real nodes: pool-a-0 with 2 GPUs, pool-b-0 with 1 (2 CPUs each)
GPUS = {"pool-a": 2, "pool-b": 1}


@pytest.fixture
def kubenas(dev_cluster, k8s_namespace, tmp_path):
    inst = Install(dev_cluster, k8s_namespace, tmp_path / "kubenas").install()
    try:
        yield inst
    finally:
        inst.close()


class Run:
    """One Experiment being watched: its store, the pods ever seen, diagnostics on failure."""

    def __init__(self, inst: Install, name: str, spec: dict) -> None:
        self.inst, self.name, self.spec = inst, name, spec
        self.store = inst.store(name)
        self.sampler = PodSampler(inst.kube, inst.ns).start()
        self.controller_pods: set = set()
        self.faults: dict = {}         # fault -> results applied when it hit
        self.t0 = time.monotonic()
        inst.create_experiment(name, spec)

    def status(self) -> dict:
        return self.inst.experiment(self.name).get("status") or {}

    def applied(self) -> int:
        try:
            return self.inst.applied_count(self.name)
        except Exception:  # noqa: BLE001 - no state yet, or S3 restarting
            return -1

    def controller(self) -> list:
        pods = self.inst.list("pods", f"kubenas.dev/experiment={self.name},{CONTROLLER}")
        self.controller_pods |= {p["metadata"]["name"] for p in pods}
        return pods

    def running_controller(self, not_named=()) -> str:
        for p in self.controller():
            if (p["status"].get("phase") == "Running" and p["metadata"]["name"] not in not_named
                    and not p["metadata"].get("deletionTimestamp")):
                return p["metadata"]["name"]
        return ""

    def diagnostics(self) -> str:
        inst = self.inst
        parts = [lambda: inst.kubectl("get", "experiments,trials,jobs,pods", "-o", "wide"),
                 lambda: "--- experiment status\n" + json.dumps(self.status(), indent=1)[:4000],
                 lambda: "--- controller pods\n" + inst.pod_logs(f"kubenas-controller-{self.name}-"),
                 lambda: "--- operator log\n" + inst.operator_log()[-6000:]]
        out = []
        for part in parts:
            try:
                out.append(part())
            except Exception as exc:  # noqa: BLE001 - diagnostics must not hide the failure
                out.append(f"(diagnostics: {exc!r})")
        return "\n".join(out)

    def wait(self, predicate, timeout: float, what: str):
        return wait_for(predicate, timeout, what, interval=0.5, on_timeout=self.diagnostics)

    def wait_applied(self, n: int, timeout: float = 180) -> None:
        self.wait(lambda: self.applied() >= n, timeout, f"{n} results applied")

    def wait_done(self, timeout: float = 300) -> dict:
        """Succeeded (the controller applied the whole budget) and the operator's counts caught
        up (it marks a Trial done when it has read the result, possibly after the controller)."""
        self.wait(lambda: self.status().get("phase") == "Succeeded", timeout,
                  f"experiment {self.name} Succeeded")
        n = self.spec["budget"]["maxTrials"]
        return self.wait(lambda: (lambda s: s if s.get("trialsCompleted") == n else None)(self.status()),
                         60, f"the operator's counts of {self.name}: {n} trials completed")

    def stop(self) -> None:
        self.sampler.stop()

    def fault(self, what: str) -> None:
        """Record how far the search was when a fault hit it."""
        self.faults[what] = self.applied()
        self.say(what)

    def say(self, msg: str) -> None:
        print(f"[{self.name} +{time.monotonic() - self.t0:5.1f}s, {self.applied()} applied] {msg}",
              flush=True)


def kubectl_tables(out: str) -> dict:
    """``kubectl get a,b,c`` output: {kind prefix: [row dicts]} (one table per kind)."""
    tables = {}
    for block in out.strip().split("\n\n"):
        rows = _table(block)
        if rows:
            tables[rows[0]["NAME"].split("/")[0]] = rows
    return tables


def interrupt_after_first_checkpoint(run: Run) -> str:
    """Delete a trial pod while it trains, after its first epoch's checkpoint is in S3 and
    before its result is: the container's processes are single-stepped (SIGCONT/SIGSTOP in
    30 ms slices, by host PID) until the checkpoint appears, then the pod is force-deleted.
    Returns the trial's name."""
    inst = run.inst
    for _attempt in range(4):
        def candidate():
            for p in inst.list("pods", TRIAL_PODS):
                name = p["metadata"]["name"]
                trial = p["metadata"]["annotations"]["kubenas.dev/trial-name"]
                if (p["status"].get("phase") == "Running"
                        and not run.store.exists(result_key(trial))
                        and not run.store.exists(f"checkpoints/{trial}/latest.pt")):
                    return name, trial, inst.cluster.container_pids(inst.ns, name)
            return None

        pod, trial, pids = run.wait(candidate, 120, "a trial pod that has just started")
        caught = False
        try:
            signal_all(pids, signal.SIGSTOP)
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                signal_all(pids, signal.SIGCONT)
                time.sleep(0.03)
                signal_all(pids, signal.SIGSTOP)
                if run.store.exists(f"checkpoints/{trial}/latest.pt"):
                    caught = not run.store.exists(result_key(trial))
                    break
            if caught:   # stopped between checkpoint and result: the pod goes (SIGKILL)
                inst.kubectl("delete", "pod", pod, "--grace-period=0", "--force", "--wait=false")
                return trial
        except ProcessLookupError:
            continue          # it finished (or died) meanwhile: take another one
        finally:
            if not caught:    # never leave a child stopped
                try:
                    signal_all(pids, signal.SIGCONT)
                except ProcessLookupError:
                    pass
    raise AssertionError("could not catch a trial between its checkpoint and its result")


def signal_all(pids: list, sig: int) -> None:
    for pid in pids:
        os.kill(pid, sig)


def stop_a_kubelet_for_a_while(run: Run, node: str, seconds: float = 35) -> list:
    """Stop ``node``'s kubelet (its containers keep running, as on a real node whose agent
    died); the node lifecycle controller marks it NotReady/Unknown; then start it again.
    Returns the Ready condition's statuses seen meanwhile."""
    cluster = run.inst.cluster
    seen = []
    cluster.kubelet_down(node)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        conds = cluster.api().get(f"/api/v1/nodes/{node}")["status"].get("conditions") or []
        ready = [c["status"] for c in conds if c["type"] == "Ready"]
        if ready and (not seen or seen[-1] != ready[0]):
            seen.append(ready[0])
        time.sleep(1)
    cluster.kubelet_up(node)
    run.wait(lambda: any(c["type"] == "Ready" and c["status"] == "True" for c in
                         cluster.api().get(f"/api/v1/nodes/{node}")["status"]["conditions"]),
             90, f"node {node} Ready again")
    # the re-registered kubelet zeroed the node's GPUs; they are advertised again
    gpus = cluster.nodes[node].spec.gpus
    run.wait(lambda: cluster.api().get(f"/api/v1/nodes/{node}")["status"]["allocatable"].get(
        "nvidia.com/gpu") == str(gpus), 60, f"node {node}'s {gpus} GPUs allocatable again")
    return seen


def check_kubectl_and_metrics(run: Run) -> None:
    """What the chart's NOTES tell a user to run works: logs of a trial Job, of the
    controller Deployment, exec into the controller; and Prometheus can scrape the operator
    (its ClusterIP Service, through kube-proxy) and the controller (headless Service)."""
    inst = run.inst
    trial = run.wait(lambda: next((p["metadata"]["labels"]["job-name"] for p in inst.list("pods", TRIAL_PODS)
                                   if p["status"].get("phase") in ("Running", "Succeeded")), None),
                     180, "a trial pod running")
    run.wait(lambda: "trial" in inst.cluster.run_kubectl("-n", inst.ns, "logs", f"job/{trial}",
                                                          check=False).stdout, 120,
             f"kubectl logs job/{trial} to show the child's output")
    deploy = f"deployment/kubenas-controller-{run.name}"
    run.wait(lambda: inst.cluster.run_kubectl("-n", inst.ns, "logs", deploy, check=False).stdout,
             60, f"kubectl logs {deploy}")
    who = inst.cluster.run_kubectl("-n", inst.ns, "exec", deploy, "--", "id", "-u").stdout
    assert who.strip() == "10001"
    operator = run.wait(lambda: inst.metrics("kubenas-operator-metrics"), 60,
                        "operator metrics through its Service")
    assert "kubenas_" in operator and "# TYPE" in operator, operator[:500]
    controller = run.wait(lambda: inst.metrics("kubenas-controller-metrics"), 60,
                          "controller metrics through its Service")
    assert "kubenas_controller" in controller or "kubenas_" in controller, controller[:500]


def check_exactly_once(run: Run, max_trials: int) -> tuple[dict, list]:
    """The controller's state, the result records, the Trials and the Jobs agree: every trial
    sampled once, applied once, one Job each, no orphans."""
    inst, name = run.inst, run.name
    ids = [f"{name}-{i:05d}" for i in range(max_trials)]
    state = inst.controller_state(name)
    strat = state["strategy"]
    assert state["nextIndex"] == max_trials
    assert state["appliedRanges"] == [[0, max_trials]]     # the compact applied set: all of them
    assert state["counts"]["applied"] == max_trials and not state["pending"]
    assert sorted(state["sampled"]) == ids                 # each trial id sampled once
    assert sorted(state["applied"]) == ids                 # and applied once
    assert sorted(s["index"] for s in state["sampled"].values()) == list(range(max_trials))
    assert strat["num_sampled"] == max_trials              # the policy sampled exactly the budget
    assert strat["pending"] == []                          # every sample got its answer
    succeeded = [t for t, a in state["applied"].items() if a["status"] == "succeeded"]
    assert succeeded, state["applied"]
    # batchSize 1, accumulate 1: one optimizer step per reward. A reward applied twice would
    # step twice (or raise "already told"); a lost update would step fewer times.
    assert strat["version"] == len(succeeded) > 0
    assert strat["in_step"] == 0

    records = {}
    for key in run.store.list("results/"):
        rec = ResultRecord.from_json(run.store.get(key))
        assert key == result_key(rec.trial_id)
        records[rec.trial_id] = rec
    assert sorted(records) == ids
    for tid, a in state["applied"].items():                 # what was applied is what was recorded
        assert a["status"] == records[tid].status, tid
        assert a["reward"] == records[tid].reward, tid

    trials = inst.list("trials")
    jobs = inst.list("jobs")
    assert sorted(t["metadata"]["name"] for t in trials) == ids
    assert sorted(j["metadata"]["name"] for j in jobs) == sorted(job_name(t) for t in ids)
    uids = {t["metadata"]["name"]: t["metadata"]["uid"] for t in trials}
    for j in jobs:
        (ref,) = j["metadata"]["ownerReferences"]
        assert ref["kind"] == "Trial" and uids[ref["name"]] == ref["uid"], j["metadata"]["name"]
        assert job_name(ref["name"]) == j["metadata"]["name"]
    job_names = {j["metadata"]["name"] for j in jobs}
    for p in inst.list("pods", TRIAL_PODS):                  # no pod outside those Jobs
        assert p["metadata"]["labels"].get("job-name") in job_names, p["metadata"]["name"]
    phases = {t["metadata"]["name"]: t["status"]["phase"] for t in trials}
    assert all(phases[t] == ("Succeeded" if records[t].succeeded else "Failed") for t in ids), phases
    return state, [records[t] for t in ids]


def check_concurrency(run: Run, pools: list) -> None:
    """Trial pods ran only on their pool's nodes, never more at once than the pool's GPUs
    allow (real scheduler) nor than its maxInFlight (controller + operator)."""
    s = run.sampler
    for p in pools:
        limit = min(GPUS[p["name"]] // max(1, p["gpusPerTrial"]), p["maxInFlight"])
        assert 1 <= s.max_running.get(p["name"], 0) <= limit, (p["name"], s.max_running)
        assert s.nodes[p["name"]] and all(n.startswith(p["name"] + "-") for n in s.nodes[p["name"]])


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_long_search_survives_controller_operator_pod_kubelet_and_s3_faults(kubenas, dev_cluster):
    # pool-a: 1 GPU per trial on a 2-GPU node -> 2 at once although maxInFlight is 3 (the
    # third waits Pending: Insufficient nvidia.com/gpu); pool-b: 1 at once.
    pools = [pool("pool-a", gpus=1, max_in_flight=3), pool("pool-b", gpus=1, max_in_flight=1)]
    n = 16
    kubenas.start_operator()
    run = Run(kubenas, "digits", digits_spec(n, pools))
    try:
        run.wait(lambda: run.running_controller(), 120, "the controller pod running")
        check_kubectl_and_metrics(run)

        # 1. a running trial pod is deleted after its first checkpoint: the Job retries it
        deleted_trial = interrupt_after_first_checkpoint(run)
        run.fault(f"deleted the pod of {deleted_trial} between its checkpoint and its result")

        # 2. the controller pod is killed: its ReplicaSet starts another, which resumes from S3
        run.wait_applied(3)
        first = run.running_controller()
        assert first
        kubenas.kubectl("delete", "pod", first, "--grace-period=0", "--force", "--wait=false")
        run.fault(f"killed controller pod {first}")
        second = run.wait(lambda: run.running_controller(not_named={first}), 60,
                          "a new controller pod")
        run.say(f"controller pod {second} running")

        # 3. the operator's container is SIGKILLed; trials go on without it; the kubelet
        #    restarts it (restartPolicy Always, after its back-off)
        run.wait_applied(5)
        kubenas.kill_operator(signal.SIGKILL)
        run.fault("operator SIGKILLed")
        kubenas.start_operator()
        run.say("operator running again")

        # 4. the S3 server restarts (same ports and data) under everybody's feet
        run.wait_applied(7)
        run.fault("restarting S3")
        dev_cluster.s3.restart()
        run.say("S3 is back")

        # 5. pool-b's kubelet stops for a while: the real node lifecycle decides
        run.wait_applied(9)
        run.fault("stopping pool-b-0's kubelet")
        ready_seen = stop_a_kubelet_for_a_while(run, "pool-b-0")
        run.say(f"pool-b-0's kubelet back; its Ready condition went {ready_seen}")
        assert "Unknown" in ready_seen, ready_seen   # the node controller saw it go silent

        status = run.wait_done(timeout=300)
        run.say("Succeeded")
    finally:
        run.stop()

    state, records = check_exactly_once(run, n)
    check_concurrency(run, pools)
    # every fault hit a running search, not a finished one
    assert all(0 <= applied < n for applied in run.faults.values()), run.faults

    # the real scheduler held pool-a's third trial back for want of GPUs
    events = kubenas.list("events")
    assert any(e["reason"] == "FailedScheduling" and "Insufficient nvidia.com/gpu" in e["message"]
               for e in events), "no trial waited for a GPU"

    # the deleted trial's second pod resumed from the first one's checkpoint
    rec = {r.trial_id: r for r in records}[deleted_trial]
    assert rec.succeeded and rec.extra["attempt"] >= 2, rec.extra
    assert rec.extra["resumed_from_epoch"] >= 1, rec.extra
    assert len(run.sampler.pods_by_trial[deleted_trial]) >= 2

    # both controller pods searched: the first sampled, the second went on (no re-sampling)
    replicas = {s["replica"] for s in state["sampled"].values()} | \
        {a["replica"] for a in state["applied"].values()}
    assert {first, second} <= replicas, (first, second, replicas)
    # the controllers and the operator rode out every fault without crashing
    assert "Traceback" not in kubenas.pod_logs("kubenas-controller-digits-", tail=10**6)
    assert "Traceback" not in kubenas.operator_log()
    # the operator really was killed and started again; the second one adopted the first
    # one's Jobs instead of making them again
    assert len(kubenas.operator_pids) == 2 and kubenas.operator_restarts() >= 1
    assert kubenas.operator_log().count("kubenas operator started") == 2
    created = [e["involvedObject"]["name"] for e in events if e["reason"] == "JobCreated"]
    assert len(created) == len(set(created)) >= n - 1, created   # (-1: killed before its event)

    # the policy learned and the best architecture is in the Experiment's status
    succeeded = [r for r in records if r.succeeded]
    best = max(succeeded, key=lambda r: r.reward)
    assert status["policyVersion"] == state["strategy"]["version"] > 0
    assert status["bestReward"] == pytest.approx(best.reward)
    assert status["bestArchitecture"] == best.architecture.to_dict()
    assert status["trialsCreated"] == n
    assert status["trialsSucceeded"] + status["trialsFailed"] == n
    assert [c for c in status["conditions"] if c["type"] == "Complete"][0]["status"] == "True"
    outputs = set(run.store.list("outputs/"))
    assert {"outputs/leaderboard.csv", "outputs/best_architecture.json",
            "outputs/best_model.pt"} <= outputs
    assert json.loads(run.store.get("outputs/best_architecture.json"))["trial_id"] == best.trial_id

    # kubectl tells the story
    t = kubectl_tables(kubenas.kubectl("get", "experiments,trials,jobs"))
    (exp,) = t["experiment.kubenas.dev"]
    assert (exp["NAME"], exp["PHASE"], exp["DONE"], exp["BUDGET"]) == \
        ("experiment.kubenas.dev/digits", "Succeeded", str(n), str(n))
    assert float(exp["BEST"]) == pytest.approx(best.reward)
    trial_rows = {r["NAME"].split("/")[1]: r for r in t["trial.kubenas.dev"]}
    assert len(trial_rows) == n
    for r in records:
        row = trial_rows[r.trial_id]
        assert row["PHASE"] == ("Succeeded" if r.succeeded else "Failed")
        if r.succeeded:
            assert float(row["REWARD"]) == pytest.approx(r.reward)
    assert {row["POOL"] for row in trial_rows.values()} == {"pool-a", "pool-b"}
    jobs = {r["NAME"]: r for r in t["job.batch"]}
    assert sorted(jobs) == sorted(f"job.batch/{job_name(x)}" for x in trial_rows)
    # Every succeeded trial's Job completes, also one whose pod the node lifecycle evicted
    # while its kubelet was away (the replacement pod finds the result and trains nothing).
    def jobs_complete() -> bool:
        rows = {r["NAME"]: r for r in kubectl_tables(kubenas.kubectl("get", "trials,jobs"))["job.batch"]}
        return all(rows[f"job.batch/{job_name(r.trial_id)}"]["COMPLETIONS"] == "1/1"
                   for r in succeeded)
    run.wait(jobs_complete, 180, "every succeeded trial's Job complete")

    # finished: the controller Deployment is parked
    run.wait(lambda: kubenas.list("deployments", "kubenas.dev/experiment=digits")[0]["spec"]["replicas"] == 0,
             30, "controller scaled to 0")


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_two_controller_replicas_share_the_policy_by_compare_and_swap(kubenas):
    # pool-a could run 2 at once (2 GPUs, 1 each): only maxInFlight keeps it to 1, even with
    # two controllers submitting Trials side by side.
    pools = [pool("pool-a", gpus=1, max_in_flight=1), pool("pool-b", gpus=1, max_in_flight=1)]
    # The trials' pods cannot be scheduled until both replicas are in their search loops:
    # otherwise the replica whose pod started first can finish all n before the other has
    # imported torch, and the test would prove nothing about sharing.
    for p in pools:
        p["nodeSelector"] = {**p["nodeSelector"], GATE: "open"}
    n = 8
    kubenas.start_operator()
    run = Run(kubenas, "twins", digits_spec(n, pools, controller={"replicas": 2}))
    try:
        run.wait(lambda: len([p for p in run.controller() if p["status"].get("phase") == "Running"]) == 2,
                 120, "two controller pods running")
        run.say(f"controller pods {sorted(run.controller_pods)}")
        run.wait(lambda: _replicas_searching(kubenas, "twins") == 2, 120, "both replicas searching")
        assert run.applied() <= 0, "a result was applied while no trial could be scheduled"
        _label_pool_nodes(kubenas, "open")
        run.say("both replicas searching; trial pods may now be scheduled")
        status = run.wait_done(timeout=300)
        run.say("Succeeded")
    finally:
        run.stop()
        _label_pool_nodes(kubenas, None)
    state, records = check_exactly_once(run, n)
    check_concurrency(run, pools)
    # both replicas sampled architectures from, and applied rewards to, the one shared policy
    pods = run.controller_pods
    assert len(pods) == 2, pods
    sampled_by = [s["replica"] for s in state["sampled"].values()]
    applied_by = [a["replica"] for a in state["applied"].values()]
    print({p: (sampled_by.count(p), applied_by.count(p)) for p in pods})   # (sampled, applied)
    assert set(sampled_by) | set(applied_by) == pods, (sampled_by, applied_by, pods)
    assert "Traceback" not in kubenas.pod_logs("kubenas-controller-twins-", tail=10**6)
    # the policy versions seen at sampling time grow with the shared policy, whichever replica
    # sampled: no replica kept sampling from a policy another had already moved past
    versions = [s["policyVersion"] for _, s in sorted(state["sampled"].items())]
    assert versions == sorted(versions), versions
    assert status["policyVersion"] == state["strategy"]["version"] > 0
    best = max((r for r in records if r.succeeded), key=lambda r: r.reward)
    assert status["bestReward"] == pytest.approx(best.reward)


@pytest.mark.slow
@pytest.mark.timeout(480)
def test_an_experiment_runs_through_the_final_phase_to_a_tested_model(kubenas):
    """Search, then the final phase as Trials on the pools (issue 12): the Experiment goes
    Running -> Final -> Succeeded, shows the test metric and the cost, and ``kubectl get
    trials`` tells search, grid and final Trials apart; the policy never sees the final ones."""
    pools = [pool("pool-a", gpus=1, max_in_flight=2), pool("pool-b", gpus=1, max_in_flight=1)]
    n = 3
    spec = digits_spec(n, pools, final={"topK": 1, "grid": {"learningRate": [0.1, 0.2]},
                                        "epochs": 3})
    kubenas.start_operator()
    run = Run(kubenas, "shipit", spec)
    phases: list = []

    def succeeded():
        phase = run.status().get("phase")
        if phase and (not phases or phases[-1] != phase):
            phases.append(phase)
        return phase == "Succeeded"
    try:
        run.wait(succeeded, 400, "experiment shipit Succeeded")
    finally:
        run.stop()
    assert phases[-3:] == ["Searching", "Final", "Succeeded"], phases
    status = run.status()
    store = run.store
    final = json.loads(store.get("outputs/final.json"))
    assert final["test"]["split"] == "test" and final["test"]["evaluations"] == 1
    assert status["testMetric"] == pytest.approx(final["test"]["accuracy"]) and 0 < status["testMetric"] <= 1
    assert status["finalTrial"] == "shipit-f0000" == final["model"]["trial"]
    assert status["cost"]["search"]["trials"] == n and status["cost"]["final"]["trials"] == 3
    for key in ("outputs/final_model.pt", "outputs/final_model.onnx", "outputs/report.html"):
        assert store.get(key), key
    # the operator counts the search toward the budget; the final phase's Trials are apart
    assert status["trialsCompleted"] == n
    tables = kubectl_tables(kubenas.kubectl("get", "experiments,trials"))
    [exp_row] = tables["experiment.kubenas.dev"]
    assert float(exp_row["TEST"]) == pytest.approx(status["testMetric"], abs=1e-4)
    stages = sorted(row["STAGE"] for row in tables["trial.kubenas.dev"])
    assert stages == ["final"] + ["grid"] * 2 + ["search"] * n, tables
    # the policy applied the n search results only
    assert kubenas.applied_count("shipit") == n


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_an_enas_experiment_is_one_pod_on_a_gpu_pool_that_resumes_and_retrains(kubenas):
    """strategy enas in the cluster (issue 13): the controller pod trains the shared weights
    and the policy itself, placed on the first pool with its GPU; killed mid-search, the next
    pod resumes from the checkpoint in S3; the derived architecture goes through the final
    phase as Trials; the pod is scaled away once done (its GPU freed)."""
    pools = [pool("pool-a", gpus=1, max_in_flight=1), pool("pool-b", gpus=1, max_in_flight=1)]
    spec = digits_spec(1000, pools, final={"grid": {"learningRate": [0.1]}, "epochs": 2})
    spec["search"] = {"space": "enas_macro", "strategy": "enas", "seed": 0,
                      "spaceOptions": {"layers": 2, "channels": 8, "poolingAt": [1],
                                       "ops": ["conv3x3", "maxpool3x3"]},
                      "strategyOptions": {"controllerSteps": 3, "deriveSamples": 2,
                                          "checkpointEvery": 2}}
    spec["trainer"] = {"dataset": {"name": "digits"}, "epochs": 3, "batchSize": 32,
                       "numThreads": 1}
    kubenas.start_operator()
    run = Run(kubenas, "oneshot", spec)
    try:
        [dep] = run.wait(lambda: kubenas.list("deployments", "kubenas.dev/experiment=oneshot") or None,
                         60, "the enas controller Deployment")
        pod_spec = dep["spec"]["template"]["spec"]
        assert pod_spec["nodeSelector"] == {"kubenas.dev/pool": "pool-a"}
        assert pod_spec["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
        run.wait(lambda: run.store.exists("enas/checkpoint.pt"), 240, "the first enas checkpoint")
        first = run.wait(run.running_controller, 30, "the controller pod running")
        kubenas.kubectl("delete", "pod", first, "--grace-period=0", "--force", "--wait=false")
        run.fault(f"killed controller pod {first} after its first checkpoint")
        second = run.wait(lambda: run.running_controller(not_named={first}), 90,
                          "a new controller pod")
        follower = kubenas.follow_logs(CONTROLLER)
        run.wait(lambda: follower.poll() or second in follower._threads, 60, f"following {second}")
        run.wait(lambda: run.status().get("phase") == "Succeeded", 420, "experiment oneshot Succeeded")
    finally:
        run.stop()
    assert "enas resumed at Position(" in follower.logs(second)
    status = run.status()
    summary = json.loads(run.store.get("outputs/enas_summary.json"))
    assert status["policyVersion"] == summary["policy_version"] > 0
    assert status["bestTrial"] == "oneshot-derived"
    assert status["bestReward"] == pytest.approx(summary["val_batch_reward"])
    final = json.loads(run.store.get("outputs/final.json"))
    assert final["architecture"] == json.loads(run.store.get("outputs/best_architecture.json"))
    assert status["testMetric"] == pytest.approx(final["test"]["accuracy"])
    assert run.store.get("outputs/final_model.pt")
    # no Trial per child: only the final phase's grid point and retrain
    stages = sorted(t["metadata"]["labels"]["kubenas.dev/stage"] for t in kubenas.list("trials"))
    assert stages == ["final", "grid"], stages
    run.wait(lambda: kubenas.list("deployments", "kubenas.dev/experiment=oneshot")[0]["spec"]["replicas"] == 0,
             60, "the controller Deployment scaled to 0")


GATE = "kubenas.dev/e2e-gate"


def _label_pool_nodes(inst: Install, value) -> None:
    """Set (None: remove) the GATE label on every pool node."""
    nodes, _ = inst.kube.list_all("/api/v1/nodes", label_selector="kubenas.dev/pool")
    for node in nodes:
        inst.kube.merge_patch(f"/api/v1/nodes/{node['metadata']['name']}",
                              {"metadata": {"labels": {GATE: value}}})


def _replicas_searching(inst: Install, experiment: str) -> int:
    """How many controller pods have logged that their search loop started."""
    logs = inst.pod_logs(f"kubenas-controller-{experiment}-", tail=10**6)
    return sum("; searching" in part for part in logs.split("\n--- "))


def _reject(inst: Install, spec: dict) -> str:
    with pytest.raises(KubeError) as info:
        inst.create_experiment("bad", spec)
    assert info.value.status == 422, info.value
    return info.value.message


def test_schema_rejects_malformed_experiments_with_422(kubenas):
    """What the structural schema can say, it says at `kubectl apply` time (422, naming the
    field). tests/operator/test_cluster.py covers search/budget/pools/storage.url; these are
    the rest of the spec."""
    good = digits_spec(2, [pool("pool-a", 1, 1)])

    def with_(section: str, key: str, value) -> dict:
        spec = json.loads(json.dumps(good))
        spec[section][key] = value
        return spec

    cases = [
        (with_("trainer", "epochs", 0), "spec.trainer.epochs"),
        (with_("trainer", "dataset", {"name": "imagenet"}), "spec.trainer.dataset.name"),
        (with_("trainer", "batchSize", "large"), "spec.trainer.batchSize"),
        (with_("trainer", "learningRate", 0), "spec.trainer.learningRate"),
        (with_("trainer", "momentum", 1.5), "spec.trainer.momentum"),
        (with_("search", "strategyOptions", {"learningRate": -1}), "spec.search.strategyOptions.learningRate"),
        (with_("search", "strategyOptions", {"batchSize": 0}), "spec.search.strategyOptions.batchSize"),
        (with_("search", "strategyOptions", {"baselineDecay": 2}), "spec.search.strategyOptions.baselineDecay"),
        (with_("search", "spaceOptions", {"numFilters": [0, 8]}), "spec.search.spaceOptions.numFilters"),
        (with_("search", "seed", -1), "spec.search.seed"),
        (with_("jobSettings", "backoffLimit", -1), "spec.jobSettings.backoffLimit"),
        (with_("jobSettings", "activeDeadlineSeconds", 0), "spec.jobSettings.activeDeadlineSeconds"),
        ({**good, "workerPools": []}, "spec.workerPools"),
        ({**good, "parallelism": 0}, "spec.parallelism"),
        ({**good, "storage": {"endpoint": "not a url"}}, "spec.storage.endpoint"),
        ({**good, "storage": {"secretName": "Not_A_Secret"}}, "spec.storage.secretName"),
        ({**good, "image": ""}, "spec.image"),
    ]
    for spec, field in cases:
        msg = _reject(kubenas, spec)
        assert field in msg, (field, msg)
    # the good one is accepted (and nothing was created by the rejected ones)
    kubenas.create_experiment("good", good)
    names = [e["metadata"]["name"] for e in kubenas.kube.list_all(custom_path("experiments", kubenas.ns))[0]]
    assert names == ["good"]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_what_the_schema_cannot_say_the_controller_reports_and_runs_nothing(kubenas):
    """Specs the schema lets through (it preserves unknown fields in option maps and cannot
    relate fields): the operator accepts them and deploys the controller; the controller
    pod finds the problem, marks the Experiment Valid=False / InvalidSpec with the field in
    the message and Failed, creates no Trial; the operator then parks its Deployment."""
    pools = [pool("pool-a", 1, 1)]
    bad = {
        "typo-strategy": (digits_spec(2, pools, search={**digits_spec(2, pools)["search"],
                                                         "strategyOptions": {"lerningRate": 0.1}}),
                          "spec.search.strategyOptions.lerningRate: unknown option"),
        "typo-trainer": (digits_spec(2, pools, trainer={"dataset": {"name": "digits"}, "epoch": 2}),
                         "spec.trainer.epoch: unknown field (did you mean 'epochs'?)"),
        "text-for-cnn": (digits_spec(2, pools, trainer={"dataset": {"name": "ptb"}, "epochs": 1}),
                         "spec.trainer.dataset.name: 'ptb' is the language-model dataset"),
    }
    kubenas.start_operator()
    # the controller pods' whole logs: a parked controller's pod goes soon after it logged
    follower = kubenas.follow_logs(CONTROLLER)
    for name, (spec, _) in bad.items():
        kubenas.create_experiment(name, spec)

    def invalid(name):
        follower.poll()
        st = kubenas.experiment(name).get("status") or {}
        cond = [c for c in st.get("conditions", []) if c["type"] == "Valid"]
        return (st, cond[0]) if cond and st.get("phase") == "Failed" else None

    for name, (_, message) in bad.items():
        st, cond = wait_for(lambda: invalid(name), 120, f"{name} Valid=False",
                            on_timeout=lambda: kubenas.kubectl("get", "experiments,pods")
                            + kubenas.pod_logs("kubenas-controller-") + kubenas.operator_log()[-3000:])
        assert (cond["status"], cond["reason"]) == ("False", "InvalidSpec"), cond
        assert message in cond["message"], (message, cond["message"])
        assert message in st["message"]
        accepted = [c for c in st["conditions"] if c["type"] == "Accepted"][0]
        assert accepted["status"] == "True"        # the operator could not have known
    for name in bad:
        wait_for(lambda: kubenas.list("deployments", f"kubenas.dev/experiment={name}")[0]["spec"]["replicas"] == 0,
                 30, f"{name}'s controller parked")
    # the controller pods really ran (the condition came from them) and made nothing
    for name in bad:
        logs = follower.logs(f"kubenas-controller-{name}-")
        assert f"experiment {kubenas.ns}/{name} is invalid" in logs, logs
    assert kubenas.list("trials") == [] and kubenas.list("jobs") == []

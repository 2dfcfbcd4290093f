"""The operator against the real dev cluster (kube-apiserver/scheduler/controller-manager
1.20, fake-kubelet GPU nodes that really run the pods, SeaweedFS). Marked ``k8s``."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from kubenas.contracts import Architecture, ResultRecord, TrialRefused, TrialRequest, result_key
from kubenas.operator.executor import KubernetesExecutor, write_experiment_status
from kubenas.operator.jobs import build_job
from kubenas.operator.kube import KubeError, custom_path, jobs_path
from kubenas.operator.naming import job_name

from tests.operator.conftest import FAKE_KUBENAS
from tests.operator.objects import CNN_ARCH

pytestmark = pytest.mark.k8s


def _reject(env, plural, body) -> str:
    with pytest.raises(KubeError) as info:
        env.kube.create(custom_path(plural, env.ns), body)
    assert info.value.status == 422, info.value
    return info.value.message


def _table(out: str) -> list:
    """Rows of a kubectl table as dicts, cut at the header's column offsets (cells may be empty)."""
    lines = out.rstrip("\n").splitlines()
    header = lines[0]
    names = header.split()
    starts = [header.index(f" {n}") + 1 if i else 0 for i, n in enumerate(names)]
    ends = starts[1:] + [None]
    return [{n: line[s:e].strip() for n, s, e in zip(names, starts, ends)} for line in lines[1:]]


def _exp(name, spec):
    return {"apiVersion": "kubenas.dev/v1", "kind": "Experiment", "metadata": {"name": name},
            "spec": spec}


def test_schemas_reject_malformed_objects_with_422(env):
    good = env.experiment_spec()
    cases = [
        ({k: v for k, v in good.items() if k != "search"}, "spec.search"),
        ({**good, "search": {"space": "cnn", "strategy": "annealing"}}, "spec.search.strategy"),
        ({**good, "search": {"space": "transformer", "strategy": "random"}}, "spec.search.space"),
        ({**good, "budget": {"maxTrials": 0}}, "spec.budget.maxTrials"),
        ({**good, "budget": {"maxTrials": "many"}}, "spec.budget.maxTrials"),
        ({**good, "budget": {}}, "spec.budget.maxTrials"),
        ({**good, "workerPools": [{"name": "Pool_A"}]}, "spec.workerPools.name"),
        ({**good, "workerPools": [{"name": "a", "gpusPerTrial": -1}]}, "spec.workerPools.gpusPerTrial"),
        ({**good, "workerPools": [{"name": "a", "maxInFlight": 0}]}, "spec.workerPools.maxInFlight"),
        ({**good, "workerPools": [{"gpusPerTrial": 1}]}, "spec.workerPools.name"),
        ({**good, "workerPools": [{"name": "a", "resources": {"memory": "lots"}}]},
         "spec.workerPools.resources.memory"),
        ({**good, "storage": {"url": "s3://key:secret@bucket/x"}}, "spec.storage.url"),
    ]
    for spec, field in cases:
        msg = _reject(env, "experiments", _exp("bad", spec))
        assert field in msg, (field, msg)
    long_name = _reject(env, "experiments", _exp("e" * 51, good))
    assert "metadata.name" in long_name

    def trial(spec):
        return {"apiVersion": "kubenas.dev/v1", "kind": "Trial", "metadata": {"name": "t"}, "spec": spec}

    t_good = {"experiment": "exp1", "pool": "pool-a", "architecture": CNN_ARCH}
    for spec, field in [
        ({k: v for k, v in t_good.items() if k != "architecture"}, "spec.architecture"),
        ({k: v for k, v in t_good.items() if k != "experiment"}, "spec.experiment"),
        ({**t_good, "pool": "Not A Pool"}, "spec.pool"),
        ({**t_good, "architecture": {**CNN_ARCH, "space": "mlp"}}, "spec.architecture.space"),
        ({**t_good, "architecture": {"space": "cnn"}}, "spec.architecture.spec"),
    ]:
        msg = _reject(env, "trials", trial(spec))
        assert field in msg, (field, msg)
    # and the good ones are accepted
    env.kube.create(custom_path("experiments", env.ns), _exp("exp1", good))
    env.kube.create(custom_path("trials", env.ns), trial(t_good))


def test_printer_columns_and_short_names(env, operator):
    env.create_experiment()
    env.create_trial("exp1-00000", fake={"reward": 0.64})
    env.wait_phase("exp1-00000", "Succeeded")
    env.wait(lambda: env.experiment().get("status", {}).get("bestReward") == 0.64, what="best reward")
    out = env.kubectl("get", "experiments")
    assert out.splitlines()[0].split() == ["NAME", "STRATEGY", "PHASE", "DONE", "BUDGET", "BEST",
                                           "TEST", "AGE"]
    cols = _table(out)[0]
    assert (cols["NAME"], cols["STRATEGY"], cols["PHASE"], cols["DONE"], cols["BUDGET"],
            cols["BEST"], cols["TEST"]) == ("exp1", "reinforce", "", "1", "4", "0.64", "")
    assert env.kubectl("get", "exp").splitlines()[0] == out.splitlines()[0]
    out = env.kubectl("get", "trials")
    assert out.splitlines()[0].split() == ["NAME", "PHASE", "REWARD", "POOL", "STAGE", "AGE"]
    row = _table(out)[0]
    assert (row["NAME"], row["PHASE"], row["REWARD"], row["POOL"], row["STAGE"]) == \
        ("exp1-00000", "Succeeded", "0.64", "pool-a", "")   # made by hand: no stage label
    assert env.kubectl("get", "trial").splitlines()[0] == out.splitlines()[0]
    wide = env.kubectl("get", "trials", "-o", "wide").splitlines()[0].split()
    assert {"EXPERIMENT", "REASON", "JOB"} <= set(wide)


def test_trials_become_exactly_one_job_each_and_follow_it(env, operator):
    exp = env.create_experiment()
    env.create_trial("exp1-00000", fake={"reward": 0.7})
    env.create_trial("exp1-00001", pool="pool-b",
                     fake={"status": "failed", "reason": "ArchitectureError: 9M parameters > 5M"})
    env.create_trial("exp1-00002", fake={"exit": 3, "noResult": True})

    ok = env.wait_phase("exp1-00000", "Succeeded")
    st = ok["status"]
    assert st["reward"] == 0.7 and st["jobName"] == "kubenas-exp1-00000"
    assert st["startTime"] and st["completionTime"] and st["nodeName"].startswith("pool-a-")

    # the Job succeeded, the child's record says failed: the record is the truth
    bad = env.wait_phase("exp1-00001", "Failed")["status"]
    assert bad["reason"] == "TrainingFailed" and "ArchitectureError" in bad["message"]
    jobs = {j["metadata"]["name"]: j for j in env.jobs()}
    assert jobs["kubenas-exp1-00001"]["status"].get("succeeded") == 1

    # died without a record: Failed with the Job's reason, and a failed record is written so
    # the search loop gets an answer instead of waiting forever
    died = env.wait_phase("exp1-00002", "Failed")["status"]
    assert died["reason"] == "BackoffLimitExceeded" and "exit code 3" in died["message"]
    rec = ResultRecord.from_json(env.store().get(result_key("exp1-00002")))
    assert rec.status == "failed" and "BackoffLimitExceeded" in rec.reason
    assert rec.extra["writtenBy"] == "kubenas-operator"

    # exactly one Job per Trial, selectable by experiment label, owned Experiment->Trial->Job
    jobs = env.jobs(selector="kubenas.dev/experiment=exp1")
    assert sorted(j["metadata"]["name"] for j in jobs) == [
        "kubenas-exp1-00000", "kubenas-exp1-00001", "kubenas-exp1-00002"]
    assert len(env.jobs()) == 3
    out = env.kubectl("get", "jobs", "-l", "kubenas.dev/experiment=exp1", "-o", "name")
    assert len(out.split()) == 3
    for j in jobs:
        trial = env.trial(j["metadata"]["annotations"]["kubenas.dev/trial-name"])
        (ref,) = j["metadata"]["ownerReferences"]
        assert (ref["kind"], ref["uid"], ref["controller"], ref["blockOwnerDeletion"]) == \
            ("Trial", trial["metadata"]["uid"], True, True)
        (tref,) = trial["metadata"]["ownerReferences"]   # added by the operator (made by hand)
        assert (tref["kind"], tref["uid"], tref["controller"]) == \
            ("Experiment", exp["metadata"]["uid"], True)
        c = j["spec"]["template"]["spec"]["containers"][0]
        env_names = {e["name"]: e for e in c["env"]}
        assert env_names["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "s3-creds"
        assert c["args"][0] == "train-child"

    # events on each transition, about the Trial
    reasons = [e["reason"] for e in env.events_for("exp1-00000")]
    assert {"JobCreated", "Running", "Succeeded"} <= set(reasons), reasons
    assert reasons.count("JobCreated") == 1
    failed = [e for e in env.events_for("exp1-00001") if e["reason"] == "Failed"]
    assert failed and failed[0]["type"] == "Warning" and "ArchitectureError" in failed[0]["message"]

    # the Experiment's counts and best
    st = env.wait(lambda: (lambda s: s if s.get("trialsCompleted") == 3 else None)(
        env.experiment().get("status", {})), what="experiment counts")
    assert (st["trialsCreated"], st["trialsSucceeded"], st["trialsFailed"]) == (3, 1, 2)
    assert st["bestTrial"] == "exp1-00000" and st["bestReward"] == 0.7
    assert st["bestArchitecture"]["space"] == "cnn"


def test_a_pool_never_runs_more_than_its_max_in_flight_whoever_makes_the_trials(env, operator):
    """Two controller replicas racing (or Trials made by hand) may create more Trials than a
    pool's maxInFlight: the operator makes their Jobs one slot at a time."""
    from kubenas.operator.status import observe_job

    env.create_experiment(workerPools=[{"name": "solo", "maxInFlight": 1,
                                        "nodeSelector": {"kubenas.dev/pool": "pool-a"}}])
    names = [f"exp1-{i:05d}" for i in range(3)]
    for n in names:
        env.create_trial(n, pool="solo", fake={"sleep": 1.0, "reward": 0.5})
    most, waiting = 0, set()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        busy = [j for j in env.jobs() if not observe_job(j, []).finished]
        most = max(most, len(busy))
        phases = env.phases()
        waiting |= {(n, r) for n, (ph, r) in phases.items() if r == "WaitingForSlot"}
        if all(phases.get(n, (None,))[0] == "Succeeded" for n in names):
            break
        time.sleep(0.1)
    assert all(env.phases()[n][0] == "Succeeded" for n in names), env.phases()
    assert most == 1, most
    assert len(waiting) >= 1                      # the others said why they waited
    assert sorted(j["metadata"]["name"] for j in env.jobs()) == [job_name(n) for n in names]


def test_insufficient_gpu_is_pending_with_the_reason(env, operator):
    env.create_experiment(workerPools=[
        {"name": "huge", "nodeSelector": {"kubenas.dev/pool": "pool-a"}, "gpusPerTrial": 3,
         "maxInFlight": 1}])
    env.create_trial("exp1-00000", pool="huge")
    t = env.wait(lambda: (lambda t: t if (t.get("status") or {}).get("reason") == "Unschedulable"
                          else None)(env.trial("exp1-00000")), what="Unschedulable")
    st = t["status"]
    assert st["phase"] == "Pending"
    assert "Insufficient nvidia.com/gpu" in st["message"]
    sched = [c for c in st["conditions"] if c["type"] == "Scheduled"][0]
    assert sched["status"] == "False" and "Insufficient nvidia.com/gpu" in sched["message"]
    ev = env.wait(lambda: [e for e in env.events_for("exp1-00000") if e["reason"] == "Unschedulable"],
                  what="Unschedulable event")
    assert ev[0]["type"] == "Warning"
    job = env.jobs()[0]
    limits = job["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == "3"


def test_a_pod_unschedulable_past_the_deadline_fails_its_trial(env, operator_factory):
    from kubenas.operator.settings import Settings

    env.create_experiment(workerPools=[
        {"name": "huge", "nodeSelector": {"kubenas.dev/pool": "pool-a"}, "gpusPerTrial": 3,
         "maxInFlight": 1}])
    env.create_trial("exp1-00000", pool="huge")
    operator_factory(settings=Settings.from_env(unschedulable_deadline_seconds=3))
    st = env.wait_phase("exp1-00000", "Failed", timeout=60)["status"]
    assert st["reason"] == "UnschedulableDeadline"
    assert "Insufficient nvidia.com/gpu" in st["message"] and "deadline 3s" in st["message"]
    rec = ResultRecord.from_json(env.store().get(result_key("exp1-00000")))
    assert rec.status == "failed" and rec.reason.startswith("UnschedulableDeadline: ")
    assert "Insufficient nvidia.com/gpu" in rec.reason
    env.wait(lambda: not env.jobs(), what="the unschedulable Job deleted")
    time.sleep(1.0)
    assert env.jobs() == [] and env.trial("exp1-00000")["status"]["phase"] == "Failed"


def test_a_job_the_api_server_refuses_fails_its_trial(env, operator):
    # the API server's Job validation refuses what the Experiment's parser lets through
    # (here: an "Exists" toleration with a value), with a 422
    env.create_experiment(workerPools=[
        {"name": "bad", "tolerations": [{"key": "k", "operator": "Exists", "value": "v"}],
         "maxInFlight": 1}])
    env.create_trial("exp1-00000", pool="bad")
    st = env.wait_phase("exp1-00000", "Failed")["status"]
    assert st["reason"] == "JobRejected" and "422" in st["message"]
    rec = ResultRecord.from_json(env.store().get(result_key("exp1-00000")))
    assert rec.status == "failed" and rec.reason.startswith("JobRejected: cannot create Job")
    time.sleep(1.0)
    assert env.jobs() == []


def test_bad_input_gets_a_condition_and_no_job(env, operator):
    env.create_experiment("dup", workerPools=[{"name": "a", "maxInFlight": 1},
                                              {"name": "a", "maxInFlight": 2}])
    env.create_experiment("exp1")
    env.create_trial("dup-00000", experiment="dup", pool="a")
    env.create_trial("exp1-00000", pool="pool-z")
    env.create_trial("ghost-00000", experiment="ghost")

    exp = env.wait(lambda: (lambda e: e if any(c["type"] == "Accepted" and c["status"] == "False"
                                               for c in e.get("status", {}).get("conditions", []))
                            else None)(env.experiment("dup")), what="dup not accepted")
    cond = [c for c in exp["status"]["conditions"] if c["type"] == "Accepted"][0]
    assert cond["reason"] == "InvalidSpec" and "duplicate pool name 'a'" in cond["message"]
    ok = [c for c in env.experiment("exp1")["status"]["conditions"] if c["type"] == "Accepted"][0]
    assert ok["status"] == "True"

    def invalid(name, reason, phase="Pending"):
        t = env.wait(lambda: (lambda t: t if (t.get("status") or {}).get("reason") == reason
                              else None)(env.trial(name)), what=f"{name} {reason}")
        c = [c for c in t["status"]["conditions"] if c["type"] == "Valid"][0]
        assert c["status"] == "False" and c["reason"] == reason
        assert t["status"]["phase"] == phase
        return c["message"]

    assert "duplicate pool name" in invalid("dup-00000", "ExperimentInvalid")
    # a pool the Experiment does not have can never run: a failed result, the Trial Failed
    msg = invalid("exp1-00000", "UnknownPool", phase="Failed")
    assert "'pool-z' is not a worker pool" in msg and "pool-a, pool-b" in msg
    rec = ResultRecord.from_json(env.store().get(result_key("exp1-00000")))
    assert rec.status == "failed" and rec.reason.startswith("UnknownPool: ")
    assert "'pool-z' is not a worker pool" in rec.reason
    assert "not found" in invalid("ghost-00000", "ExperimentNotFound")
    assert env.wait(lambda: [e for e in env.events_for("exp1-00000") if e["reason"] == "UnknownPool"])
    assert [e for e in env.events_for("dup") if e["reason"] == "InvalidSpec"]
    time.sleep(1.0)
    assert env.jobs() == []


def test_finished_or_stopped_experiment_stops_its_running_trials(env, operator):
    env.create_experiment("exp1")
    env.create_experiment("exp2")
    env.create_trial("exp1-00000", fake={"sleep": 60})
    env.create_trial("exp2-00000", experiment="exp2", fake={"sleep": 60})
    env.wait_phase("exp1-00000", "Running")
    env.wait_phase("exp2-00000", "Running")
    store = env.store()
    env.wait(lambda: store.exists("started/exp1-00000"), what="child started training")

    write_experiment_status(env.api_client, env.ns, "exp1", phase="Succeeded")
    env.kube.merge_patch(custom_path("experiments", env.ns, "exp2"),
                         {"metadata": {"annotations": {"kubenas.dev/stop": "true"}}})
    for name, exp in (("exp1-00000", "exp1"), ("exp2-00000", "exp2")):
        st = env.wait_phase(name, "Failed")["status"]
        assert st["reason"] == "ExperimentStopped" and exp in st["message"]
        job = env.wait(lambda: (lambda j: j if any(c["type"] == "Failed" and c["status"] == "True"
                                                   for c in j.get("status", {}).get("conditions", []))
                                else None)(env.kube.get(jobs_path(env.ns, job_name(name)))),
                       what=f"job of {name} failed")
        assert job["status"].get("active", 0) == 0
        assert [e for e in env.events_for(name) if e["reason"] == "Stopped"]
    assert env.wait(lambda: env.experiment("exp2")["status"].get("phase") == "Stopped")
    # the children were killed: no pod left running, no result written after their sleep
    env.wait(lambda: not [p for p in env.pods() if p["status"].get("phase") in ("Running", "Pending")],
             what="pods gone", timeout=45)
    assert not store.exists(result_key("exp1-00000"))
    # a finished Experiment's new Trials never get a Job
    env.create_trial("exp1-00001")
    assert env.wait_phase("exp1-00001", "Failed")["status"]["reason"] == "ExperimentStopped"
    assert job_name("exp1-00001") not in {j["metadata"]["name"] for j in env.jobs()}
    # the terminal phase is kept
    write_experiment_status(env.api_client, env.ns, "exp1", phase="Searching")
    assert env.experiment("exp1")["status"]["phase"] == "Succeeded"


def test_deleting_the_experiment_cascades_to_trials_jobs_and_pods(env, operator):
    env.create_experiment()
    env.create_trial("exp1-00000", fake={"sleep": 60})
    env.create_trial("exp1-00001", fake={"sleep": 0.1})
    env.wait_phase("exp1-00000", "Running")
    env.wait_phase("exp1-00001", "Succeeded")
    assert len(env.jobs()) == 2
    env.kubectl("delete", "experiment", "exp1", "--wait=false")
    env.wait(lambda: not env.trials() and not env.jobs(), timeout=60,
             what="trials and jobs garbage-collected")
    env.wait(lambda: not env.pods(), timeout=60, what="pods garbage-collected")


def test_a_trial_orphaned_by_a_deleted_experiment_is_never_a_new_sample(env):
    """`kubectl delete experiment --cascade=orphan`, then the same name again: the new
    Experiment's controller finds Trials of its trial ids already there (the real garbage
    collector has stripped their owner). They are not its samples: refused (a failed result
    with this reason, in the loop), naming both UIDs; a fresh id is submitted as usual."""
    old = env.create_experiment()
    arch = Architecture.from_dict(CNN_ARCH)
    first = KubernetesExecutor("exp1", env.ns, api_client=env.api_client)
    first.submit(TrialRequest(trial_id="exp1-00000", architecture=arch))
    first.close()
    assert env.trial("exp1-00000")["metadata"]["annotations"] == {
        "kubenas.dev/experiment-uid": old["metadata"]["uid"]}
    env.kube.delete(custom_path("experiments", env.ns, "exp1"), "Orphan")
    env.wait(lambda: not env.trial("exp1-00000")["metadata"].get("ownerReferences"),
             timeout=60, what="the garbage collector orphans the Trial")
    new = env.wait(lambda: env.create_experiment(), timeout=30, what="exp1 created again")
    ex = KubernetesExecutor("exp1", env.ns, api_client=env.api_client)
    with pytest.raises(TrialRefused) as err:
        ex.submit(TrialRequest(trial_id="exp1-00000", architecture=arch))
    assert (f"not this sample (made by Experiment uid {old['metadata']['uid']}, this one is "
            f"uid {new['metadata']['uid']})") in str(err.value)
    ex.submit(TrialRequest(trial_id="exp1-00001", architecture=arch))
    ex.submit(TrialRequest(trial_id="exp1-00001", architecture=arch))   # its own: 409, fine
    assert env.trial("exp1-00001")["metadata"]["ownerReferences"][0]["uid"] == new["metadata"]["uid"]
    ex.close()


def test_executor_submits_trials_and_counts_slots(env, operator):
    env.create_experiment(trainer={"epochs": 1, "options": {"fake": {"sleep": 1.5, "reward": 0.5}}})
    ex = KubernetesExecutor("exp1", env.ns, api_client=env.api_client)
    assert ex.pools == ["pool-a", "pool-b"]
    assert (ex.free_slots(), ex.free_slots("pool-a"), ex.free_slots("pool-b")) == (3, 2, 1)
    with pytest.raises(ValueError, match="pool-c"):
        ex.free_slots("pool-c")
    arch = Architecture.from_dict(CNN_ARCH)
    for i in range(3):
        ex.submit(TrialRequest(trial_id=f"exp1-{i:05d}", architecture=arch))
    ex.submit(TrialRequest(trial_id="exp1-00000", architecture=arch))   # again: no-op
    pools = {t["metadata"]["name"]: t["spec"]["pool"] for t in ex.trials()}
    assert pools == {"exp1-00000": "pool-a", "exp1-00001": "pool-a", "exp1-00002": "pool-b"}
    assert ex.free_slots() == 0
    assert ex.in_flight() == {"exp1-00000", "exp1-00001", "exp1-00002"}
    t = env.trial("exp1-00000")
    assert t["metadata"]["ownerReferences"][0]["kind"] == "Experiment"
    assert t["metadata"]["labels"]["kubenas.dev/experiment"] == "exp1"
    assert t["spec"]["trainer"]["options"]["fake"]["reward"] == 0.5
    ex.submit(TrialRequest(trial_id="exp1-00003", architecture=arch, pool="pool-b"))
    assert env.trial("exp1-00003")["spec"]["pool"] == "pool-b"

    env.wait(lambda: ex.in_flight() == set(), timeout=60, what="all trials done")
    assert ex.free_slots() == 3
    assert len(env.jobs()) == 4
    assert ex.stop_requested() is None
    out = ex.write_status(phase="Searching", policy_version=7,
                          summary={"bestReward": 0.9, "bestTrial": "exp1-00003",
                                   "bestArchitecture": CNN_ARCH},
                          conditions=[{"type": "ControllerReady", "status": "True",
                                       "reason": "Resumed", "message": "4 samples"}])
    st = out["status"]
    assert st["phase"] == "Searching" and st["policyVersion"] == 7 and st["startTime"]
    assert (st["bestReward"], st["bestTrial"]) == (0.9, "exp1-00003")
    assert st["bestArchitecture"]["space"] == "cnn"
    # the best only improves (the operator writes it from Trials too; both converge)
    st = ex.write_status(best_reward=0.2, best_trial="exp1-00001")["status"]
    assert (st["bestReward"], st["bestTrial"]) == (0.9, "exp1-00003")
    # the operator's own condition survives the controller's write and vice versa
    types = {c["type"] for c in env.wait(lambda: (lambda s: s if {"Accepted", "ControllerReady"} <= {
        c["type"] for c in s.get("conditions", [])} else None)(env.experiment()["status"]))["conditions"]}
    assert {"Accepted", "ControllerReady"} <= types
    ex.write_status(phase="Succeeded")
    assert ex.stop_requested() == "is Succeeded"


def test_operator_killed_and_restarted_never_duplicates_or_orphans_jobs(env, operator_factory, tmp_path):
    env.create_experiment()
    # a crash between "create Job" and "write status": the Job exists, the Trial knows nothing
    t0 = env.create_trial("exp1-00000", fake={"sleep": 0.5})
    exp = env.experiment()
    env.kube.create(jobs_path(env.ns), build_job(t0, exp, child_command=FAKE_KUBENAS))

    cmd = [sys.executable, "-m", "kubenas.operator.main", "--namespace", env.ns,
           "--kubeconfig", env.cluster.kubeconfig, "--child-command", json.dumps(FAKE_KUBENAS),
           "--resync-seconds", "2", "--result-grace-seconds", "3", "--log-level", "WARNING",
           "--no-controllers"]   # like operator_factory: the test drives Trials by hand
    proc = subprocess.Popen(cmd, cwd=str(tmp_path))
    try:
        for i in range(1, 7):
            env.create_trial(f"exp1-{i:05d}", fake={"sleep": 1.0})
        env.wait(lambda: len(env.jobs()) >= 3, what="some jobs", timeout=30)
    finally:
        proc.send_signal(signal.SIGKILL)     # mid-way: no clean shutdown
        proc.wait(10)
    for i in range(7, 9):
        env.create_trial(f"exp1-{i:05d}", fake={"sleep": 0.2})
    operator_factory(resync_seconds=2.0)
    names = [f"exp1-{i:05d}" for i in range(9)]
    env.wait(lambda: all(p == "Succeeded" for p, _ in (env.phases().get(n, (None, None))
                                                      for n in names)),
             timeout=90, what="all 9 trials succeeded")
    jobs = env.jobs()
    assert sorted(j["metadata"]["name"] for j in jobs) == sorted(job_name(n) for n in names)
    uids = {t["metadata"]["name"]: t["metadata"]["uid"] for t in env.trials()}
    for j in jobs:
        (ref,) = j["metadata"]["ownerReferences"]
        assert uids[ref["name"]] == ref["uid"]
    created = [e for n in names for e in env.events_for(n) if e["reason"] == "JobCreated"]
    assert len(created) <= 8      # the hand-made Job was adopted, not re-created
    pods_per_job = {}
    for p in env.pods():
        jn = p["metadata"]["labels"].get("job-name")
        pods_per_job[jn] = pods_per_job.get(jn, 0) + 1
    assert all(v == 1 for v in pods_per_job.values()), pods_per_job


def test_metrics_are_served(env, operator_factory):
    op = operator_factory(metrics_port=0)
    env.create_experiment()
    env.create_trial("exp1-00000", fake={"reward": 0.3})
    env.wait_phase("exp1-00000", "Succeeded")
    env.wait(lambda: op.trials.get(env.ns, "exp1-00000").get("status", {}).get("phase") == "Succeeded")
    port = op.metrics_server.port
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert f'kubenas_trials{{namespace="{env.ns}",phase="Succeeded"}} 1.0' in text
    assert f'kubenas_trials{{namespace="{env.ns}",phase="Running"}} 0.0' in text
    assert "kubenas_operator_jobs_created_total" in text
    assert 'kubenas_operator_reconcile_seconds_bucket{kind="trial"' in text


def test_a_deleted_job_is_never_silently_recreated(env, operator_factory):
    env.create_experiment()
    env.create_trial("exp1-00000", fake={"sleep": 60})
    op = operator_factory()
    env.wait_phase("exp1-00000", "Running")
    op.stop()
    env.kubectl("delete", "job", job_name("exp1-00000"), "--wait=false")
    env.wait(lambda: not env.jobs(), what="job deleted")
    operator_factory()
    st = env.wait_phase("exp1-00000", "Failed")["status"]
    assert st["reason"] == "JobDeleted"
    time.sleep(1.0)
    assert env.jobs() == []     # no second training run
    rec = ResultRecord.from_json(env.store().get(result_key("exp1-00000")))
    assert rec.status == "failed" and rec.reason.startswith("JobDeleted")


def test_expired_finished_jobs_leave_their_trials_as_they_were(env, operator_factory):
    """The operator's default TTL deletes finished Jobs; their Trials keep their phase and
    reason, no Job is made again, no failed record replaces the child's (also after a
    restart of the operator)."""
    from kubenas.operator.settings import Settings

    env.create_experiment(jobSettings={"backoffLimit": 0})   # no TTL of its own
    env.create_trial("exp1-00000", fake={"sleep": 0.1})
    env.create_trial("exp1-00001", pool="pool-b", fake={"exit": 3, "noResult": True})
    op = operator_factory(settings=Settings.from_env(job_ttl_seconds=1))
    env.wait_phase("exp1-00000", "Succeeded")
    env.wait_phase("exp1-00001", "Failed")
    before = env.phases()
    assert before["exp1-00000"] == ("Succeeded", "Succeeded")
    env.wait(lambda: not env.jobs(), timeout=60, what="finished Jobs expired")
    time.sleep(2.0)
    assert env.phases() == before and env.jobs() == []
    op.stop()
    operator_factory(settings=Settings.from_env(job_ttl_seconds=1))
    time.sleep(3.0)
    assert env.phases() == before and env.jobs() == []
    rec = ResultRecord.from_json(env.store().get(result_key("exp1-00000")))
    assert rec.status == "succeeded" and (rec.extra or {}).get("writtenBy") != "kubenas-operator"


def test_a_paged_list_is_trimmed_page_by_page(env):
    """The informers' re-list keeps at most one page of whole objects: ``transform`` sees each
    item as its page arrives, and every item of every page comes back."""
    path = f"/api/v1/namespaces/{env.ns}/configmaps"
    for i in range(7):
        env.kube.create(path, {"apiVersion": "v1", "kind": "ConfigMap",
                               "metadata": {"name": f"page-{i}", "labels": {"paged": "yes"}},
                               "data": {"blob": "x" * 1000}})
    seen = []

    def trim(obj):
        seen.append(obj["metadata"]["name"])
        return {"metadata": {"name": obj["metadata"]["name"]}}

    items, rv = env.kube.list_all(path, label_selector="paged=yes", limit=3, transform=trim)
    assert sorted(o["metadata"]["name"] for o in items) == [f"page-{i}" for i in range(7)]
    assert items == [{"metadata": {"name": n}} for n in seen] and rv


def test_runner_stops_cleanly(env):
    import threading

    from kubenas.operator.main import OperatorRunner

    before = {t.ident for t in threading.enumerate()}
    t0 = time.monotonic()
    with OperatorRunner(env.ns, api_client=env.cluster.api_client(), metrics_port=0,
                        child_command=FAKE_KUBENAS) as op:
        port = op.metrics_server.port
        assert all(i.synced.is_set() for i in op.informers)
    assert time.monotonic() - t0 < 15
    left = [t for t in threading.enumerate() if t.ident not in before and t.is_alive()]
    assert left == [], left
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2)


def test_crds_install_idempotently(env):
    from kubenas.operator.crd import install_crds, load_crds

    assert sorted(c["metadata"]["name"] for c in load_crds()) == [
        "experiments.kubenas.dev", "trials.kubenas.dev"]
    assert install_crds(env.api_client) == ["experiments.kubenas.dev", "trials.kubenas.dev"]
    assert install_crds(env.api_client) == ["experiments.kubenas.dev", "trials.kubenas.dev"]
    out = env.cluster.run_kubectl("get", "crd", "experiments.kubenas.dev", "trials.kubenas.dev",
                                  "-o", "jsonpath={.items[*].spec.names.shortNames}").stdout
    assert "exp" in out and "trial" in out


def test_every_example_experiment_file_is_a_valid_experiment_object(env):
    """The experiment file *is* the resource: every examples/*.yaml passes the API server's
    schema unchanged (server-side dry run), and the cluster one passes the operator's checks."""
    from pathlib import Path

    import yaml

    from kubenas.operator.validation import parse_experiment_object

    files = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))
    docs = [(f, d) for f in files for d in yaml.safe_load_all(f.read_text())
            if isinstance(d, dict) and d.get("kind") == "Experiment"]
    assert docs, "no example experiments found"
    for f, doc in docs:
        out = env.kube.request("POST", custom_path("experiments", env.ns), [("dryRun", "All")], doc)
        assert out["spec"] == doc["spec"], f      # nothing pruned or changed by the schema
        if str(doc["spec"].get("storage", {}).get("url", "")).startswith("s3://"):
            parse_experiment_object(out)


def test_operator_watching_a_list_of_namespaces(env, operator_factory, dev_cluster):
    from tests.operator.conftest import Env

    other = dev_cluster.create_namespace("t2")
    unwatched = dev_cluster.create_namespace("t3")
    try:
        envs = [env, Env(dev_cluster, other), Env(dev_cluster, unwatched)]
        operator_factory(namespace=f"{env.ns},{other}")
        for e in envs:
            e.create_experiment()
            e.create_trial("exp1-00000", fake={"reward": 0.25})
        for e in envs[:2]:
            assert e.wait_phase("exp1-00000", "Succeeded")["status"]["reward"] == 0.25
        time.sleep(0.5)
        assert envs[2].jobs() == [] and "status" not in envs[2].trial("exp1-00000")
    finally:
        dev_cluster.delete_namespace(other)
        dev_cluster.delete_namespace(unwatched)


CONTROLLER_ROLE_RULES = [   # the chart's controller Role (helm/kubenas/templates/rbac.yaml)
    {"apiGroups": ["kubenas.dev"], "resources": ["trials"], "verbs": ["get", "list", "watch", "create"]},
    {"apiGroups": ["kubenas.dev"], "resources": ["experiments"],
     "verbs": ["get", "list", "watch", "update", "patch"]},
    {"apiGroups": ["kubenas.dev"], "resources": ["experiments/status"], "verbs": ["get", "update", "patch"]},
    {"apiGroups": ["kubenas.dev"], "resources": ["experiments/finalizers"], "verbs": ["update"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch"]},
]


def test_experiment_to_controller_deployment_to_trials_to_jobs(env, operator_factory):
    """End to end with a stand-in controller process: the operator makes the Experiment's
    controller Deployment (its pod runs with a least-privilege ServiceAccount and sees the
    operator's defaults), the controller submits Trials through KubernetesExecutor, the
    operator runs them as Jobs, the controller marks the Experiment Succeeded and the
    operator parks the Deployment."""
    from kubenas.operator.settings import Settings

    from tests.operator.conftest import FAKE_CONTROLLER

    k = env.kube
    k.create(f"/api/v1/namespaces/{env.ns}/serviceaccounts",
             {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "kubenas-controller"}})
    k.create(f"/apis/rbac.authorization.k8s.io/v1/namespaces/{env.ns}/roles",
             {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
              "metadata": {"name": "kubenas-controller"}, "rules": CONTROLLER_ROLE_RULES})
    k.create(f"/apis/rbac.authorization.k8s.io/v1/namespaces/{env.ns}/rolebindings",
             {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
              "metadata": {"name": "kubenas-controller"},
              "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                          "name": "kubenas-controller"},
              "subjects": [{"kind": "ServiceAccount", "name": "kubenas-controller",
                            "namespace": env.ns}]})
    env.wait(lambda: k.get(f"/api/v1/namespaces/{env.ns}/serviceaccounts/kubenas-controller").get("secrets"),
             what="controller ServiceAccount token")
    settings = Settings(
        child_command=FAKE_KUBENAS, controller_command=FAKE_CONTROLLER,
        controller_service_account="kubenas-controller",
        controller_labels={"app.kubernetes.io/instance": "kubenas-release"},
        default_worker_pools=[{"name": "default", "nodeSelector": {"kubenas.dev/pool": "pool-a"},
                               "maxInFlight": 2}],
        default_storage_url=f"s3://{env.s3.bucket}/{env.ns}-defaults", storage_secret="s3-creds",
        s3_endpoint=env.s3.endpoint, region="us-east-1")
    operator_factory(settings=settings, manage_controllers=True)

    spec = env.experiment_spec(budget={"maxTrials": 3},
                               trainer={"epochs": 1, "options": {"fake": {"sleep": 0.3, "reward": 0.42}}})
    del spec["storage"], spec["workerPools"]          # the operator's defaults fill them in
    k.create(custom_path("experiments", env.ns), {"apiVersion": "kubenas.dev/v1", "kind": "Experiment",
                                                  "metadata": {"name": "auto"}, "spec": spec})
    dep = env.wait(lambda: env.kube.list_all(f"/apis/apps/v1/namespaces/{env.ns}/deployments",
                                             label_selector="kubenas.dev/experiment=auto")[0],
                   what="controller deployment")[0]
    assert dep["metadata"]["ownerReferences"][0]["kind"] == "Experiment"
    pod = dep["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "kubenas-controller"
    assert pod["containers"][0]["args"][:5] == ["controller", "--experiment", "auto", "--namespace", env.ns]
    assert dep["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/instance"] == "kubenas-release"

    st = env.wait(lambda: (lambda s: s if s.get("phase") == "Succeeded" else None)(
        env.experiment("auto").get("status", {})), timeout=90, what="experiment Succeeded")
    assert st["bestReward"] == 0.42
    env.wait(lambda: env.experiment("auto")["status"].get("trialsSucceeded") == 3,
             what="operator's counts")   # the controller may see the records first
    trials = env.trials()
    assert {t["spec"]["pool"] for t in trials} == {"default"}
    assert len(env.jobs(selector="kubenas.dev/experiment=auto")) == 3
    # results went to the default storage URL (<default>/<namespace>/<experiment>/<uid>)
    from kubenas.storage.s3 import S3Store

    uid = env.experiment("auto")["metadata"]["uid"]
    store = S3Store(bucket=env.s3.bucket, prefix=f"{env.ns}-defaults/{env.ns}/auto/{uid}",
                    endpoint_url=env.s3.endpoint,
                    access_key_id=env.s3.access_key, secret_access_key=env.s3.secret_key)
    assert len(store.list("results/")) == 3
    # finished: the controller is parked
    env.wait(lambda: env.kube.get(f"/apis/apps/v1/namespaces/{env.ns}/deployments/"
                                  f"kubenas-controller-auto")["spec"]["replicas"] == 0,
             what="controller scaled to 0")
    assert [e for e in env.events_for("auto") if e["reason"] == "ControllerCreated"]
    cond = env.wait(lambda: [c for c in env.experiment("auto")["status"]["conditions"]
                             if c["type"] == "ControllerDeployed" and c["reason"] == "Parked"],
                    what="ControllerDeployed/Parked")[0]
    assert cond["status"] == "True"


def test_an_experiment_naming_another_image_or_secret_is_refused_with_a_condition(
        env, operator_factory, capsys):
    """Images and Secrets are the admin's choice (chart experiments.allowedImages /
    allowedSecrets, both empty: only the chart's own): an Experiment naming another gets
    Accepted=False with the reason and an Event, and nothing runs for it — no controller
    Deployment, no Job for its Trial."""
    from kubenas.operator.kube import deployments_path
    from kubenas.operator.settings import Settings

    settings = Settings(child_command=FAKE_KUBENAS, storage_secret="s3-creds",
                        allowed_images=[], allowed_secrets=[])
    operator_factory(settings=settings, manage_controllers=True)
    env.create_experiment("img", image="evil.example.com/miner:latest")
    env.create_experiment("sec", storage={"url": env.store_url, "endpoint": env.s3.endpoint,
                                          "secretName": "other-team-s3"})
    for name in ("img", "sec"):
        env.create_trial(f"{name}-00000", experiment=name)

    def refused(name):
        def condition():
            conds = (env.experiment(name).get("status") or {}).get("conditions") or []
            return next((c for c in conds if c["type"] == "Accepted" and c["status"] == "False"), None)
        return env.wait(condition, what=f"{name} Accepted=False")

    img, sec = refused("img"), refused("sec")
    assert img["reason"] == "ImageNotAllowed" and img["message"] == (
        f"spec.image: 'evil.example.com/miner:latest' is not an allowed image (allowed: "
        f"{settings.image}; the chart's experiments.allowedImages)")
    assert sec["reason"] == "SecretNotAllowed" and sec["message"] == (
        "spec.storage.secretName: 'other-team-s3' is not an allowed Secret (allowed: s3-creds; "
        "the chart's experiments.allowedSecrets)")
    for name, reason in (("img", "ImageNotAllowed"), ("sec", "SecretNotAllowed")):
        assert env.wait(lambda: [e for e in env.events_for(name) if e["reason"] == reason],
                        what=f"{reason} Event")
        trial = env.wait(lambda: (lambda t: t if (t.get("status") or {}).get("reason") else None)(
            env.trial(f"{name}-00000")), what=f"{name}-00000 status")
        assert (trial["status"]["phase"], trial["status"]["reason"]) == ("Pending", "ExperimentInvalid")
    time.sleep(1.0)
    assert env.jobs() == [] and env.kube.list_all(deployments_path(env.ns))[0] == []
    with capsys.disabled():
        for name, c in (("img", img), ("sec", sec)):
            print(f"\nExperiment {name}: Accepted={c['status']} {c['reason']}: {c['message']}")

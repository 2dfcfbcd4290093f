"""The operator's cache indexes follow every change (add, phase change, delete, re-list) and
answer what the reconcile asks without a scan: counts, best, unfinished Jobs per pool."""

from __future__ import annotations

import json

from kubenas.operator import constants as C
from kubenas.operator import indexes as X
from kubenas.operator.informer import Informer
from kubenas.operator.trim import TRIALS, trim_trial


def trial(name, phase=None, reward=None, exp="e", ns="ns", rv=1):
    st = {"phase": phase} if phase else {}
    if reward is not None:
        st["reward"] = reward
    return {"metadata": {"name": name, "namespace": ns, "resourceVersion": str(rv)},
            "spec": {"experiment": exp, "pool": "p", "architecture": {"space": "cnn", "n": name}},
            "status": st}


def job(name, exp="e", pool="p", succeeded=False, ns="ns", rv=1):
    status = {"conditions": [{"type": "Complete", "status": "True"}], "succeeded": 1} if succeeded else {}
    return {"metadata": {"name": name, "namespace": ns, "resourceVersion": str(rv),
                         "labels": {C.LABEL_EXPERIMENT: exp, C.LABEL_POOL: pool}},
            "spec": {"backoffLimit": 2}, "status": status}


class ListOnce:
    def __init__(self, items):
        self.items = items

    def list_all(self, path, label_selector=None, transform=None):
        return [transform(o) if transform else o for o in self.items], "1"


def informer(indexers, items=(), trim=lambda o: o):
    packing = {"pack": TRIALS.pack, "unpack": TRIALS.unpack} if trim is trim_trial else {}
    inf = Informer(ListOnce(items), "/x", "x", lambda kind, obj: None, trim=trim,
                   indexers=indexers, **packing)
    inf._list()
    return inf


def test_phase_counts_follow_changes_and_relists():
    trials = [trial("a"), trial("b", "Running"), trial("c", "Succeeded", 0.5),
              trial("d", "Succeeded", 0.9), trial("e", "Failed"), trial("x", exp="other")]
    inf = informer(X.TRIAL_INDEXERS, trials, trim_trial)
    assert X.phase_counts(inf, "ns", "e") == {
        "trialsCreated": 5, "trialsPending": 1, "trialsRunning": 1, "trialsSucceeded": 2,
        "trialsFailed": 1, "trialsCompleted": 3}
    inf.upsert(trial("b", "Succeeded", 0.1, rv=2))     # Running -> Succeeded
    inf.forget("ns", "a")
    counts = X.phase_counts(inf, "ns", "e")
    assert (counts["trialsCreated"], counts["trialsPending"], counts["trialsRunning"],
            counts["trialsSucceeded"]) == (4, 0, 0, 3)
    assert {t["metadata"]["name"] for t in inf.by_index(X.UNFINISHED, True)} == {"x"}
    assert X.phase_counts(inf, "ns", "nope")["trialsCreated"] == 0
    inf.kube.items = [trial("a")]                       # a re-list replaces every index
    inf._list()
    assert X.phase_counts(inf, "ns", "e")["trialsCreated"] == 1
    assert inf.count(X.BY_PHASE, ("ns", "e", "Succeeded")) == 0


def test_finished_trials_are_cached_without_their_architecture():
    inf = informer(X.TRIAL_INDEXERS, [trial("a", "Running"), trial("b", "Succeeded", 0.3)], trim_trial)
    assert inf.get("ns", "a")["spec"]["architecture"]
    assert inf.get("ns", "b")["spec"] == {"experiment": "e", "pool": "p"}
    assert inf.get("ns", "b")["status"]["reward"] == 0.3


def test_a_finished_trial_keeps_only_what_its_reconcile_and_the_indexes_read():
    import json
    t = trial("b", "Failed")
    t["metadata"].update(uid="u-1", ownerReferences=[{"kind": "Experiment", "name": "e"}],
                         labels={C.LABEL_EXPERIMENT: "e"}, managedFields=[{"manager": "x"}])
    t["status"].update(reason="Stopped", message="experiment finished",
                       conditions=[{"type": "Valid", "status": "True"}], startTime="t0")
    a, b = (trim_trial(json.loads(json.dumps(t))) for _ in range(2))   # two watch events
    assert a == {"metadata": {"name": "b", "namespace": "ns", "uid": "u-1", "resourceVersion": "1",
                              "labels": {C.LABEL_EXPERIMENT: "e"}},
                 "spec": {"experiment": "e", "pool": "p"},
                 "status": {"phase": "Failed", "reason": "Stopped", "message": "experiment finished"}}
    # decoded separately, yet one copy of each key and shared value
    assert next(iter(a["status"])) is next(iter(b["status"]))
    assert a["spec"]["experiment"] is b["spec"]["experiment"]
    assert a["metadata"]["labels"][C.LABEL_EXPERIMENT] is b["metadata"]["labels"][C.LABEL_EXPERIMENT]


def _stubs():
    full = trial("f", "Failed", rv=7)
    full["apiVersion"], full["kind"] = C.API_VERSION, C.TRIAL_KIND
    full["metadata"].update(uid="u-1", labels={C.LABEL_EXPERIMENT: "e", C.LABEL_TRIAL: "f"},
                            annotations={C.ANNOTATION_EXPERIMENT_UID: "x"},
                            deletionTimestamp="2026-12-04T00:00:00Z")
    full["status"].update(reason="JobFailed", message="pod f: OOMKilled")
    empty_labels = trial("g", "Succeeded", 0.25)
    empty_labels["metadata"]["labels"] = {}
    return [full, trial("s", "Succeeded", 0.5), trial("n", "Succeeded"), empty_labels]


def test_a_finished_trial_is_packed_and_reads_back_as_the_same_dict():
    odd = trim_trial(trial("o", "Succeeded", 0.1))
    odd["metadata"]["labels"] = {"k": 3}                       # whatever JSON holds
    odd["status"]["reason"] = None
    for stub in [trim_trial(t) for t in _stubs()] + [odd]:
        packed = TRIALS.pack(stub)
        assert isinstance(packed, bytes) and len(packed) < len(json.dumps(stub)), stub
        assert TRIALS.unpack(packed) == stub
    running = trim_trial(trial("r", "Running"))
    assert TRIALS.pack(running) is running and TRIALS.unpack(running) is running  # spec is read


def test_the_packed_cache_answers_like_the_plain_one():
    trials = [trial("a"), trial("b", "Running")] + _stubs()
    plain = informer(X.TRIAL_INDEXERS, trials, lambda o: trim_trial(o))
    packed = informer(X.TRIAL_INDEXERS, trials, trim_trial)
    assert sum(isinstance(v, bytes) for v in packed._cache.values()) == 4
    key = lambda t: t["metadata"]["name"]
    assert sorted(packed.items(), key=key) == sorted(plain.items(), key=key)
    for name in ("a", "b", "f", "s", "n", "g"):
        assert packed.get("ns", name) == plain.get("ns", name)
    assert packed.index_counts(X.BY_PHASE) == plain.index_counts(X.BY_PHASE)
    assert sorted(packed.by_index(X.BY_EXPERIMENT, ("ns", "e")), key=key) == \
        sorted(plain.by_index(X.BY_EXPERIMENT, ("ns", "e")), key=key)
    older = trial("s", "Succeeded", 0.9, rv=0)             # an older event changes nothing
    packed.upsert(older)
    assert packed.get("ns", "s")["status"]["reward"] == 0.5
    packed.upsert(trial("s", "Succeeded", 0.9, rv=5))
    assert packed.get("ns", "s")["status"]["reward"] == 0.9


def test_index_counts_and_unfinished_trials_of_an_experiment():
    trials = [trial("a"), trial("b", "Running"), trial("c", "Succeeded", 0.5),
              trial("x", "Running", exp="other"), trial("y", "Succeeded", 0.1, ns="ns2")]
    inf = informer(X.TRIAL_INDEXERS, trials, trim_trial)
    assert inf.index_counts(X.BY_PHASE) == {
        ("ns", "e", "Pending"): 1, ("ns", "e", "Running"): 1, ("ns", "e", "Succeeded"): 1,
        ("ns", "other", "Running"): 1, ("ns2", "e", "Succeeded"): 1}
    assert {t["metadata"]["name"] for t in inf.by_index(X.UNFINISHED_OF, ("ns", "e"))} == {"a", "b"}
    inf.upsert(trial("b", "Failed", rv=2))
    assert {t["metadata"]["name"] for t in inf.by_index(X.UNFINISHED_OF, ("ns", "e"))} == {"a"}


def test_best_trials_only_improve():
    best = X.BestTrials()
    for t in (trial("a", "Succeeded", 0.5), trial("b", "Failed"), trial("c", "Succeeded", 0.9),
              trial("d", "Succeeded", 0.7), trial("z", "Succeeded", 2.0, exp="other")):
        best.observe(t)
    assert best.get("ns", "e") == (0.9, "c")
    assert best.get("ns", "nope") is None
    best.forget("ns", "e")
    assert best.get("ns", "e") is None


def test_jobs_in_flight_per_pool():
    inf = informer(X.JOB_INDEXERS, [job("j1"), job("j2"), job("j3", pool="q"),
                                    job("j4", succeeded=True)])
    assert inf.count(X.IN_FLIGHT, ("ns", "e", "p")) == 2
    inf.upsert(job("j1", succeeded=True, rv=2))          # finished: no longer in flight
    inf.upsert(job("j5", rv=1))                          # our own write-through counts at once
    assert inf.count(X.IN_FLIGHT, ("ns", "e", "p")) == 2
    assert inf.count(X.IN_FLIGHT, ("ns", "e", "q")) == 1
    inf.forget("ns", "j2")
    assert {j["metadata"]["name"] for j in inf.by_index(X.IN_FLIGHT, ("ns", "e", "p"))} == {"j5"}


def test_the_final_phases_trials_count_toward_neither_the_budget_nor_the_best():
    def staged(name, stage, phase=None, reward=None):
        t = trial(name, phase, reward)
        if stage is not None:
            t["metadata"]["labels"] = {C.LABEL_STAGE: stage}
        return t

    trials = [staged("s1", "search", "Succeeded", 0.5), staged("s0", None, "Succeeded", 0.4),
              staged("g1", "grid", "Succeeded", 0.9), staged("g2", "grid", "Running"),
              staged("f1", "final", "Succeeded", 0.95)]
    inf = informer(X.TRIAL_INDEXERS, trials, trim_trial)
    counts = X.phase_counts(inf, "ns", "e")
    assert (counts["trialsCreated"], counts["trialsSucceeded"], counts["trialsRunning"]) == (2, 2, 0)
    assert {t["metadata"]["name"] for t in inf.by_index(X.UNFINISHED, True)} == {"g2"}  # still resynced
    best = X.BestTrials()
    for t in trials:
        best.observe(TRIALS.unpack(TRIALS.pack(trim_trial(t))))
    assert best.get("ns", "e") == (0.5, "s1")


def test_objects_with_the_same_index_values_share_one_entry_that_leaves_with_the_last():
    inf = informer(X.TRIAL_INDEXERS, [trial(f"t{i}", "Succeeded", 0.5) for i in range(50)]
                   + [trial("r", "Running")], trim_trial)
    combos = {id(v) for v in inf._values_of.values()}
    assert len(combos) == 2            # 50 finished Trials hold one shared tuple, "r" another
    for i in range(50):
        inf.forget("ns", f"t{i}")
    assert X.phase_counts(inf, "ns", "e")["trialsSucceeded"] == 0
    assert len(inf._canonical) == 1    # the Succeeded combination went with its last Trial
    inf.upsert(trial("r", "Failed", rv=2))
    assert inf.index_counts(X.BY_PHASE) == {("ns", "e", "Failed"): 1}
    assert inf.by_index(X.UNFINISHED, True) == []
    inf.forget("ns", "r")
    assert (inf._values_of, inf._canonical, inf.index_counts(X.BY_EXPERIMENT)) == ({}, {}, {})

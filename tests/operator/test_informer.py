"""List+watch resume and the work queue, against a scripted API (no cluster)."""

from __future__ import annotations

import threading
import time

from kubenas.operator.informer import Informer, WorkQueue
from kubenas.operator.kube import KubeError, TransportError


def obj(name, rv, ns="ns"):
    return {"metadata": {"name": name, "namespace": ns, "resourceVersion": str(rv)}}


class ScriptedKube:
    """list_all / watch answers in order; records the resourceVersion each watch used."""

    def __init__(self, lists, watches):
        self.lists = list(lists)
        self.watches = list(watches)
        self.watch_rvs = []
        self.done = threading.Event()

    def list_all(self, path, label_selector=None, transform=None):
        items, rv = self.lists.pop(0)
        return [transform(o) for o in items] if transform else items, rv

    def watch(self, path, rv, label_selector=None, timeout_seconds=300, on_response=None):
        self.watch_rvs.append(rv)
        if not self.watches:
            self.done.set()
            time.sleep(0.05)
            return
        step = self.watches.pop(0)
        if isinstance(step, Exception):
            raise step
        for event in step:
            yield event


def run_informer(kube, **kw):
    seen = []
    inf = Informer(kube, "/x", "x", lambda kind, o: seen.append((kind, o["metadata"]["name"])), **kw)
    inf.start()
    assert kube.done.wait(5)
    inf.stop()
    inf.join(5)
    return inf, seen


def test_resumes_from_last_version_and_relists_on_410():
    kube = ScriptedKube(
        lists=[([obj("a", 5)], "10"), ([obj("a", 5), obj("c", 30)], "31")],
        watches=[
            [{"type": "ADDED", "object": obj("b", 11)},
             {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "15"}}}],
            TransportError("connection reset"),          # resume from 15, not a re-list
            [{"type": "MODIFIED", "object": obj("b", 16)},
             {"type": "ERROR", "object": {"code": 410, "reason": "Expired"}}],   # -> re-list
            [{"type": "DELETED", "object": obj("a", 32)}],
        ])
    inf, seen = run_informer(kube)
    assert kube.watch_rvs[:5] == ["10", "15", "15", "31", "32"]
    assert inf.relists == 2
    # b vanished across the re-list: DELETED; c appeared: ADDED; a deleted by the watch
    assert ("DELETED", "b") in seen and ("ADDED", "c") in seen and seen[-1] == ("DELETED", "a")
    assert sorted(o["metadata"]["name"] for o in inf.items()) == ["c"]


def test_410_from_the_watch_request_relists():
    kube = ScriptedKube(lists=[([], "1"), ([obj("z", 9)], "9")],
                        watches=[KubeError(410, "Gone", "too old resource version")])
    inf, seen = run_informer(kube)
    assert inf.relists == 2 and inf.get("ns", "z") is not None


def test_write_through_keeps_the_newer_object():
    kube = ScriptedKube(lists=[([obj("a", 5)], "5")],
                        watches=[[{"type": "MODIFIED", "object": obj("a", 6)}]])
    inf, _ = run_informer(kube)
    inf.upsert(obj("a", 9))
    inf.upsert(obj("a", 7))      # older: ignored
    assert inf.get("ns", "a")["metadata"]["resourceVersion"] == "9"


def test_workqueue_dedups_and_never_hands_one_key_to_two_workers():
    q = WorkQueue(base_delay=0.01)
    q.add("k")
    q.add("k")
    assert q.get(0.1) == "k"
    q.add("k")                    # while processing: comes back after done()
    assert q.get(0.05) is None
    q.done("k")
    assert q.get(0.1) == "k"
    q.done("k")
    assert q.get(0.05) is None


def test_workqueue_delays_and_rate_limits():
    q = WorkQueue(base_delay=0.05, max_delay=0.2)
    q.add_after("later", 0.15)
    t0 = time.monotonic()
    assert q.get(1.0) == "later" and time.monotonic() - t0 >= 0.14
    q.done("later")
    delays = [q.add_rate_limited("bad") for _ in range(4)]
    assert delays == [0.05, 0.1, 0.2, 0.2]
    q.forget("bad")
    assert q.add_rate_limited("bad") == 0.05
    q.shutdown()
    assert q.get(0.1) is None


def test_cache_keeps_only_what_the_reconcile_reads():
    from kubenas.operator.trim import trim_job, trim_pod

    def job(name, rv):
        o = obj(name, rv)
        o["metadata"]["managedFields"] = [{"manager": "kube-controller-manager"}]
        o["metadata"]["annotations"] = {"kubenas.dev/trial-name": name}
        o["spec"] = {"backoffLimit": 2, "activeDeadlineSeconds": 60,
                     "template": {"spec": {"containers": [{"args": ["--architecture-json", "{}"]}]}}}
        o["status"] = {"active": 1}
        return o

    kube = ScriptedKube(lists=[([job("a", 5)], "10")],
                        watches=[[{"type": "ADDED", "object": job("b", 11)}]])
    inf, seen = run_informer(kube, trim=trim_job)
    inf.upsert(job("c", 12))
    for name in "abc":
        cached = inf.get("ns", name)
        assert cached["spec"] == {"backoffLimit": 2, "activeDeadlineSeconds": 60}, name
        assert "managedFields" not in cached["metadata"], name
        assert cached["metadata"]["annotations"] == {"kubenas.dev/trial-name": name}
        assert cached["status"] == {"active": 1}
    assert seen == [("ADDED", "a"), ("ADDED", "b")]

    pod = {"metadata": {"name": "p", "managedFields": [{}]}, "status": {"phase": "Running"},
           "spec": {"nodeName": "n1", "containers": [{"env": [{"name": "X"}]}]}}
    assert trim_pod(pod) == {"metadata": {"name": "p"}, "spec": {"nodeName": "n1"},
                             "status": {"phase": "Running"}}


def test_coalesced_adds_make_one_delayed_key():
    q = WorkQueue()
    for _ in range(50):
        q.add_coalesced("exp", 0.2)
    assert q.get(timeout=0.05) is None          # not before its delay
    assert q.get(timeout=1.0) == "exp"
    q.done("exp")
    assert q.get(timeout=0.4) is None           # the 49 other calls joined the first
    q.add_coalesced("exp", 0.05)                # once due, the next call schedules again
    assert q.get(timeout=1.0) == "exp"

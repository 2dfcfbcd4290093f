"""KubernetesExecutor against a narrow fake of the API (no cluster): transient API errors
are ridden out with jittered exponential backoff, permanent ones are raised, and free
slots come from a list+watch of the Experiment's Trials plus the executor's own
submissions, never from a list after every submission."""

from __future__ import annotations

import copy
import queue
import random
import time

import pytest

from kubenas.contracts import Architecture, TrialRefused, TrialRequest
from kubenas.operator import executor as executor_mod
from kubenas.operator.executor import Backoff, KubernetesExecutor, is_transient
from kubenas.operator.kube import KubeError, TransportError

from tests.operator.objects import CNN_ARCH, experiment

ARCH = Architecture.from_dict(CNN_ARCH)


class FakeKube:
    """The Experiment and its Trials; ``fail[method]``: exceptions raised by the next calls."""

    def __init__(self) -> None:
        self.experiment = experiment()   # pools: pool-a (2 slots), pool-b (1 slot)
        self.trials: dict = {}
        self.fail: dict = {}
        self.calls: dict = {}
        self.lose_reply_of_create = False
        self.events: queue.Queue = queue.Queue()
        self.rv = 0

    def _event(self, kind: str, trial: dict) -> None:
        self.rv += 1
        trial["metadata"]["resourceVersion"] = str(self.rv)
        self.events.put({"type": kind, "object": copy.deepcopy(trial)})

    def _enter(self, method: str) -> None:
        self.calls[method] = self.calls.get(method, 0) + 1
        queue = self.fail.get(method) or []
        if queue:
            raise queue.pop(0)

    def get(self, path: str) -> dict:
        self._enter("get")
        if "/trials/" in path:
            name = path.rsplit("/", 1)[1]
            if name not in self.trials:
                raise KubeError(404, "NotFound", f"trial {name}")
            return copy.deepcopy(self.trials[name])
        return copy.deepcopy(self.experiment)

    def list_all(self, path: str, label_selector=None, field_selector=None, limit=500,
                 transform=None):
        self._enter("list_all")
        items = [copy.deepcopy(t) for t in self.trials.values()]
        return [transform(t) for t in items] if transform else items, str(self.rv)

    def watch(self, path, rv, label_selector=None, timeout_seconds=300, on_response=None):
        """The events since the list; ends when none comes for a moment (the informer
        watches again from the last version it saw)."""
        while True:
            try:
                yield self.events.get(timeout=0.05)
            except queue.Empty:
                return

    def create(self, path: str, body: dict) -> dict:
        self._enter("create")
        name = body["metadata"]["name"]
        if name in self.trials:
            raise KubeError(409, "AlreadyExists", f"trials {name} already exists")
        self.trials[name] = copy.deepcopy(body)
        self._event("ADDED", self.trials[name])
        if self.lose_reply_of_create:
            self.lose_reply_of_create = False
            raise TransportError("POST trials: ConnectionResetError")
        return body

    def merge_patch(self, path: str, body: dict) -> dict:
        self._enter("merge_patch")
        self.experiment["status"] = {k: v for k, v in body["status"].items() if v is not None}
        return copy.deepcopy(self.experiment)

    def finish(self, name: str, phase: str = "Succeeded") -> None:
        self.trials[name]["status"] = {"phase": phase}
        self._event("MODIFIED", self.trials[name])

    def add(self, name: str, experiment: str, pool: str) -> None:
        """A Trial someone else made."""
        self.trials[name] = {"metadata": {"name": name}, "spec": {"experiment": experiment, "pool": pool}}
        self._event("ADDED", self.trials[name])


def eventually(check, timeout: float = 5.0):
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "not seen in time"
        time.sleep(0.02)


@pytest.fixture
def fake(monkeypatch):
    """The one FakeKube that the executor's ``Kube(...)`` gives (an instance of the class
    that stands in for Kube, so ``isinstance(kube, Kube)`` holds in the executor)."""
    class TheKube(FakeKube):
        def __new__(cls, *args, **kwargs):
            return kube

        def __init__(self, *args, **kwargs) -> None:
            pass

    kube = object.__new__(TheKube)
    FakeKube.__init__(kube)
    monkeypatch.setattr(executor_mod, "Kube", TheKube)
    return kube


def make(fake, **kw):
    sleeps: list = []
    kw.setdefault("backoff", Backoff(base=0.2, cap=5.0, sleep=sleeps.append,
                                     rng=random.Random(1)))
    ex = KubernetesExecutor("exp1", "ns1", api_client=object(), settings=None, **kw)
    return ex, sleeps


@pytest.fixture(autouse=True)
def _stop_watches(monkeypatch):
    made = []
    real_init = KubernetesExecutor.__init__

    def init(self, *a, **kw):
        real_init(self, *a, **kw)
        made.append(self)
    monkeypatch.setattr(KubernetesExecutor, "__init__", init)
    yield
    for ex in made:
        ex.close()


def test_backoff_is_jittered_exponential_and_capped():
    b = Backoff(base=0.2, cap=5.0, rng=random.Random(7))
    for attempt, full in [(0, 0.2), (1, 0.4), (2, 0.8), (3, 1.6), (10, 5.0), (60, 5.0)]:
        delays = {b.delay(attempt) for _ in range(20)}
        assert all(0.5 * full <= d <= full for d in delays), (attempt, delays)
        assert len(delays) > 1   # jittered: replicas do not retry in lockstep


def test_what_counts_as_transient():
    assert is_transient(TransportError("connection refused"))
    for status in (429, 500, 502, 503, 504):
        assert is_transient(KubeError(status, "x"))
    for status in (400, 403, 404, 409, 422):
        assert not is_transient(KubeError(status, "x"))


def test_transient_api_errors_are_ridden_out(fake):
    fake.fail["get"] = [TransportError("connection refused"), KubeError(503, "ServiceUnavailable"),
                        KubeError(429, "TooManyRequests")]
    ex, sleeps = make(fake)   # the constructor reads the Experiment
    assert ex.pools == ["pool-a", "pool-b"]
    assert len(sleeps) == 3 and 0.1 <= sleeps[0] <= 0.2 and 0.4 <= sleeps[2] <= 0.8
    fake.fail["list_all"] = [KubeError(500, "InternalError")]   # the watch's list: retried
    assert ex.free_slots() == 3 and fake.calls["list_all"] == 2
    fake.fail["create"] = [KubeError(502, "BadGateway")]
    ex.submit(TrialRequest(trial_id="exp1-00000", architecture=ARCH))
    assert "exp1-00000" in fake.trials
    fake.fail["get"] = [TransportError("reset")]
    assert ex.stop_requested() is None
    fake.fail["merge_patch"] = [KubeError(503, "ServiceUnavailable")]
    assert ex.write_status(phase="Searching")["status"]["phase"] == "Searching"
    assert len(sleeps) == 6


def test_permanent_api_errors_are_raised_at_once(fake):
    ex, sleeps = make(fake)
    fake.fail["create"] = [KubeError(403, "Forbidden", "trials is forbidden")]
    with pytest.raises(KubeError, match="403"):
        ex.submit(TrialRequest(trial_id="exp1-00000", architecture=ARCH))
    assert sleeps == []


def test_backoff_gives_up_when_told_to(fake):
    fake.fail["get"] = [TransportError("down")] * 50
    sleeps: list = []
    with pytest.raises(TransportError):
        KubernetesExecutor("exp1", "ns1", api_client=object(),
                           backoff=Backoff(base=1.0, cap=1.0, give_up_after=3.0,
                                           sleep=sleeps.append, rng=random.Random(2)))
    assert 3 <= len(sleeps) <= 6 and sum(sleeps[:-1]) < 3.0 <= sum(sleeps)


def test_a_create_whose_reply_was_lost_is_submitted_once_and_counted(fake):
    ex, sleeps = make(fake)
    assert ex.free_slots("pool-b") == 1
    fake.lose_reply_of_create = True
    ex.submit(TrialRequest(trial_id="exp1-00000", architecture=ARCH, pool="pool-b"))
    assert list(fake.trials) == ["exp1-00000"] and len(sleeps) == 1   # retried: 409, fine
    assert ex.free_slots("pool-b") == 0


def test_free_slots_count_submissions_and_follow_the_watch(fake):
    ex, _ = make(fake)
    assert ex.free_slots() == 3 and fake.calls["list_all"] == 1
    for i in range(3):
        ex.submit(TrialRequest(trial_id=f"exp1-{i:05d}", architecture=ARCH))
        ex.free_slots()
    assert (ex.free_slots(), ex.free_slots("pool-a"), ex.free_slots("pool-b")) == (0, 0, 0)
    assert ex.in_flight() == {"exp1-00000", "exp1-00001", "exp1-00002"}
    assert {t["spec"]["pool"] for t in fake.trials.values()} == {"pool-a", "pool-b"}
    fake.finish("exp1-00000")
    fake.finish("exp1-00002", "Failed")
    eventually(lambda: ex.free_slots() == 2)
    assert ex.in_flight() == {"exp1-00001"}
    fake.add("exp1-00009", "exp1", "pool-b")          # made by someone else: seen too
    eventually(lambda: ex.free_slots("pool-b") == 0)
    assert ex.in_flight() == {"exp1-00001", "exp1-00009"}
    fake.add("other-00000", "other", "pool-a")        # another Experiment's: not counted
    fake.finish("exp1-00001")
    eventually(lambda: ex.in_flight() == {"exp1-00009"})
    assert ex.free_slots("pool-a") == 2
    assert fake.calls["list_all"] == 1                # one list; the rest came as events


def test_status_of_reads_one_trial(fake):
    ex, _ = make(fake)
    assert ex.status_of("exp1-00000") is None
    ex.submit(TrialRequest(trial_id="exp1-00000", architecture=ARCH))
    fake.finish("exp1-00000")
    calls = fake.calls.get("list_all", 0)
    assert ex.status_of("exp1-00000") == {"phase": "Succeeded"}
    assert fake.calls.get("list_all", 0) == calls


def test_write_status_rereads_and_redoes_on_conflict(fake):
    ex, sleeps = make(fake)
    fake.fail["merge_patch"] = [KubeError(409, "Conflict", "the object has been modified")]
    out = ex.write_status(phase="Searching", best_reward=0.5, best_trial="exp1-00003")
    assert out["status"]["phase"] == "Searching" and out["status"]["bestReward"] == 0.5
    assert len(sleeps) == 1 and 0.1 <= sleeps[0] <= 0.2
    assert ex.write_status(best_reward=0.2, best_trial="exp1-00001")["status"]["bestTrial"] == "exp1-00003"


def _other_arch() -> dict:
    other = copy.deepcopy(CNN_ARCH)
    other["spec"]["layers"][0]["num_filters"] = 48
    return other


def _left_behind(fake, name: str, uid: str, arch: dict = None, annotate: bool = True) -> None:
    """A Trial of ``name`` that the Experiment of ``uid`` made (then orphaned)."""
    meta = {"name": name, "labels": {"kubenas.dev/experiment": "exp1"}}
    if annotate:
        meta["annotations"] = {"kubenas.dev/experiment-uid": uid}
    else:
        meta["ownerReferences"] = [{"kind": "Experiment", "name": "exp1", "uid": uid}]
    fake.trials[name] = {"metadata": meta, "spec": {"experiment": "exp1", "pool": "pool-a",
                                                    "architecture": arch or dict(CNN_ARCH)}}


def test_a_trial_is_annotated_with_the_uid_of_the_experiment_that_sampled_it(fake):
    ex, _ = make(fake)
    ex.submit(TrialRequest(trial_id="exp1-00000", architecture=ARCH))
    assert fake.trials["exp1-00000"]["metadata"]["annotations"] == {
        "kubenas.dev/experiment-uid": "uid-exp"}
    ex.submit(TrialRequest(trial_id="exp1-00000", architecture=ARCH))   # again: 409, ours, fine


def test_a_trial_left_by_an_earlier_experiment_of_this_name_is_refused(fake):
    ex, _ = make(fake)
    _left_behind(fake, "exp1-00000", "uid-old")
    with pytest.raises(TrialRefused) as err:
        ex.submit(TrialRequest(trial_id="exp1-00000", architecture=ARCH))
    msg = str(err.value)
    assert msg.startswith("trial ns1/exp1-00000: a Trial of this name already exists and is "
                          "not this sample (made by Experiment uid uid-old, this one is uid uid-exp)")
    assert "kubectl -n ns1 delete trials -l kubenas.dev/experiment=exp1" in msg
    # a hand-made (unannotated) Trial is judged by its owner reference
    _left_behind(fake, "exp1-00001", "uid-old", annotate=False)
    with pytest.raises(TrialRefused, match="made by Experiment uid uid-old"):
        ex.submit(TrialRequest(trial_id="exp1-00001", architecture=ARCH))


def test_a_trial_of_this_experiment_with_another_architecture_is_refused(fake):
    ex, _ = make(fake)
    _left_behind(fake, "exp1-00000", "uid-exp", arch=_other_arch())
    with pytest.raises(TrialRefused, match=r"not this sample \(it describes another architecture\)"):
        ex.submit(TrialRequest(trial_id="exp1-00000", architecture=ARCH))


def test_the_trials_of_the_experiment_it_resumes_are_its_own(fake):
    fake.experiment["metadata"]["annotations"] = {
        "kubenas.dev/resume-from": "0a0a0a0a-0000-4000-8000-00000000000a"}
    ex, _ = make(fake)
    _left_behind(fake, "exp1-00000", "0a0a0a0a-0000-4000-8000-00000000000a")
    _left_behind(fake, "exp1-00001", "uid-exp", annotate=False)
    ex.submit(TrialRequest(trial_id="exp1-00000", architecture=ARCH))
    ex.submit(TrialRequest(trial_id="exp1-00001", architecture=ARCH))
    assert ex.in_flight() >= {"exp1-00000", "exp1-00001"}

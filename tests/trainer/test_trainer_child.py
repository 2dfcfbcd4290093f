"""train_child: a real (short) training, failures as results, idempotence, resume."""

from __future__ import annotations

import io
import sys
import time
import types

import pytest
import torch

from kubenas.contracts import Architecture, ResultRecord, result_key
from kubenas.storage import StorageError
from kubenas.storage.local import LocalStore
from kubenas.trainer import child as child_mod
from kubenas.trainer.child import checkpoint_key, model_key, train_child
from kubenas.trainer.cost import STARTED_AT_ENV
from kubenas.trainer.reward import compute_reward

RNN_CELL = Architecture.from_dict({"space": "rnn_cell", "spec": {
    "base": 2, "nodes": [{"combine": "add", "activation": "tanh"},
                         {"combine": "elem_mult", "activation": "relu"},
                         {"combine": "elem_mult", "activation": "sigmoid"}],
    "cell_inject": {"node": 0, "combine": "add", "activation": "relu"}, "cell_index": 1}})
CONFIG = {"dataset": {"name": "digits"}, "epochs": 4, "batchSize": 64, "rewardWindow": 2,
          "rewardExponent": 3, "seed": 3}  # saveModel defaults to true


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One real training on digits, shared by the tests that only read its record."""
    small = Architecture.from_dict({"space": "cnn", "spec": {"layers": [
        {"name": "l1", "inputs": [], "filter_height": 3, "filter_width": 3, "num_filters": 16},
        {"name": "l2", "inputs": ["l1"], "filter_height": 3, "filter_width": 3,
         "num_filters": 16},
        {"name": "l3", "inputs": ["l1", "l2"], "filter_height": 3, "filter_width": 3,
         "num_filters": 16}]}})
    store = LocalStore(tmp_path_factory.mktemp("store"))
    record = train_child("exp-00001", "exp", small, CONFIG, store)
    return store, record, small


def test_short_training_on_digits_beats_chance_clearly(trained):
    store, record, _ = trained
    assert record.status == "succeeded", record.reason
    assert [m.epoch for m in record.metrics] == [1, 2, 3, 4]
    assert max(m.val_acc for m in record.metrics) > 0.5  # chance is 0.1
    m = record.metrics[-1]
    assert m.train_loss > 0 and 0 <= m.train_acc <= 1 and m.val_loss > 0 and m.seconds > 0
    assert record.extra["params"] > 0 and record.extra["device"] == "cpu"
    assert record.extra["train_size"] == 1350 and record.extra["val_size"] == 150
    assert record.timings["started_at"].endswith("Z") and record.timings["finished_at"] >= \
        record.timings["started_at"]
    assert record.timings["train_seconds"] > 0


def test_the_record_carries_its_cost_from_the_process_start(trained):
    _, record, _ = trained
    assert record.cost.device == "cpu" and record.cost.gpu_count == 0
    assert record.cost.wall_seconds >= record.timings["total_seconds"] > 0


def test_reward_is_max_of_last_window_val_acc_to_the_exponent(trained):
    _, record, _ = trained
    accs = [m.val_acc for m in record.metrics]
    assert record.reward == pytest.approx(max(accs[-2:]) ** 3)
    assert compute_reward([0.1, 0.5, 0.9, 0.2, 0.3, 0.4, 0.35], window=5, exponent=3) == \
        pytest.approx(0.9 ** 3)
    assert compute_reward([0.1, 0.5, 0.9, 0.2, 0.3, 0.4, 0.35], window=3, exponent=2) == \
        pytest.approx(0.4 ** 2)
    with pytest.raises(ValueError):
        compute_reward([], 5, 3)


def test_the_result_is_stored_create_only_and_the_checkpoint_removed(trained):
    store, record, _ = trained
    stored = ResultRecord.from_json(store.get(result_key("exp-00001")))
    assert stored.to_dict() == record.to_dict()
    assert not store.exists(checkpoint_key("exp-00001"))


def test_saved_model_is_runnable_torchscript(trained):
    store, record, _ = trained
    assert record.extra["model_key"] == model_key("exp-00001")
    model = torch.jit.load(io.BytesIO(store.get(model_key("exp-00001"))))
    assert model(torch.rand(3, 1, 8, 8)).shape == (3, 10)


def test_a_second_call_returns_the_first_result_without_training(trained, monkeypatch):
    store, record, small = trained

    def boom(*a, **k):
        raise AssertionError("trained again")

    monkeypatch.setattr(child_mod, "train_cnn", boom)
    again = train_child("exp-00001", "exp", small, CONFIG, store)
    assert again.to_dict() == record.to_dict()


def test_first_result_wins_when_another_attempt_finishes_first(tmp_path, small_cnn, monkeypatch):
    store = LocalStore(tmp_path)
    real = child_mod.train_cnn
    other = ResultRecord(experiment="exp", trial_id="t", architecture=small_cnn,
                         status="succeeded", reward=0.125)

    def racing(*a, **k):  # another pod writes its result while we train
        out = real(*a, **k)
        store.put_new(result_key("t"), other.to_json())
        return out

    monkeypatch.setattr(child_mod, "train_cnn", racing)
    got = train_child("t", "exp", small_cnn, dict(CONFIG, epochs=1), store)
    assert got.reward == 0.125
    assert ResultRecord.from_json(store.get(result_key("t"))).reward == 0.125
    assert not store.exists(checkpoint_key("t"))


class KilledAfter(LocalStore):
    """Writes the checkpoint of epoch ``k``, then dies (like a pod killed right after)."""

    def __init__(self, root, k):
        super().__init__(root)
        self.k, self.checkpoints = k, 0

    def put(self, key, data):
        etag = super().put(key, data)
        if key.startswith("checkpoints/"):
            self.checkpoints += 1
            if self.checkpoints == self.k:
                raise KeyboardInterrupt("killed")
        return etag


def test_resume_after_a_kill_continues_with_the_next_epoch(tmp_path, small_cnn):
    cfg = dict(CONFIG, epochs=4)
    with pytest.raises(KeyboardInterrupt):
        train_child("r", "exp", small_cnn, cfg, KilledAfter(tmp_path / "a", 2))
    store = KilledAfter(tmp_path / "a", 99)  # the retried pod: same store, no more kills
    assert not store.exists(result_key("r"))
    ckpt = torch.load(io.BytesIO(store.get(checkpoint_key("r"))), weights_only=True)
    assert ckpt["epoch"] == 2 and [m["epoch"] for m in ckpt["metrics"]] == [1, 2]

    resumed = train_child("r", "exp", small_cnn, cfg, store)
    assert store.checkpoints == 2  # epochs 3 and 4 only
    assert resumed.status == "succeeded"
    assert [m.epoch for m in resumed.metrics] == [1, 2, 3, 4]
    assert resumed.extra["resumed_from_epoch"] == 2 and resumed.extra["attempt"] == 2
    assert not store.exists(checkpoint_key("r"))

    # the same run uninterrupted gives the same numbers: the resume restored everything
    whole = train_child("w", "exp", small_cnn, cfg, LocalStore(tmp_path / "b"))
    for a, b in zip(resumed.metrics, whole.metrics):
        assert a.val_acc == pytest.approx(b.val_acc, abs=1e-9)
        assert a.train_loss == pytest.approx(b.train_loss, rel=1e-5)


def test_a_resumed_child_costs_what_every_attempt_spent(tmp_path, small_cnn, monkeypatch):
    monkeypatch.setenv(STARTED_AT_ENV, str(time.time() - 100.0))   # the first pod's start
    with pytest.raises(KeyboardInterrupt):
        train_child("r", "exp", small_cnn, dict(CONFIG, epochs=3), KilledAfter(tmp_path, 2))
    second = time.time()
    monkeypatch.setenv(STARTED_AT_ENV, str(second))               # the retried pod's
    resumed = train_child("r", "exp", small_cnn, dict(CONFIG, epochs=3), LocalStore(tmp_path))
    assert resumed.extra["attempt"] == 2
    assert 100.0 < resumed.cost.wall_seconds < 100.0 + 2 * (time.time() - second) + 60


def test_a_checkpoint_of_another_architecture_is_ignored(tmp_path, small_cnn, make_layer):
    store = LocalStore(tmp_path)
    buf = io.BytesIO()
    torch.save({"epoch": 3, "architecture_key": "something else", "metrics": []}, buf)
    store.put(checkpoint_key("x"), buf.getvalue())
    rec = train_child("x", "exp", small_cnn, dict(CONFIG, epochs=1), store)
    assert rec.status == "succeeded" and rec.extra["resumed_from_epoch"] is None


def test_an_unbuildable_architecture_is_a_failed_result(tmp_path, small_cnn, monkeypatch):
    # Every well-formed description builds (§3.4's padding/concat rules see to that), so the
    # builder is made to refuse one here; the child must turn that into a failed result.
    from kubenas.trainer.builders import cnn
    from kubenas.trainer.errors import ArchitectureError

    def refuse(*a, **k):
        raise ArchitectureError("layer_2: cannot be built")

    monkeypatch.setattr(cnn, "build_cnn", refuse)
    store = LocalStore(tmp_path)
    rec = train_child("bad", "exp", small_cnn, CONFIG, store)
    assert rec.status == "failed" and rec.reward is None
    assert rec.reason == "ArchitectureError: layer_2: cannot be built"
    assert ResultRecord.from_json(store.get(result_key("bad"))).reason == rec.reason


def test_a_malformed_description_raises_and_writes_nothing(tmp_path, make_layer):
    from kubenas.contracts import ContractError

    store = LocalStore(tmp_path)
    bad = Architecture(space="cnn", spec={"layers": [make_layer("a"), make_layer("b", ["zzz"])]})
    with pytest.raises(ContractError, match=r"layers\[1\]\.inputs\[0\]: 'zzz'"):
        train_child("bad", "exp", bad, CONFIG, store)
    assert store.list() == []


def test_more_than_max_parameters_is_a_failed_result(tmp_path, small_cnn):
    rec = train_child("big", "exp", small_cnn, dict(CONFIG, maxParameters=1000),
                      LocalStore(tmp_path))
    assert rec.status == "failed"
    assert rec.reason.startswith("TooLarge: ") and "maxParameters 1,000" in rec.reason


def test_out_of_memory_in_the_first_step_is_a_failed_result(tmp_path, small_cnn, monkeypatch):
    from kubenas.trainer.builders.cnn import CnnChild

    def oom(self, images):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 96.00 GiB")

    monkeypatch.setattr(CnnChild, "forward", oom)
    rec = train_child("oom", "exp", small_cnn, CONFIG, LocalStore(tmp_path))
    assert rec.status == "failed" and rec.reason.startswith("OutOfMemory: epoch 1")


def test_rnn_cell_without_the_language_model_trainer_is_a_failed_result(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "kubenas.trainer.lm_child", None)  # import -> ImportError
    rec = train_child("lm", "exp", RNN_CELL, {}, LocalStore(tmp_path))
    assert rec.status == "failed" and rec.reason.startswith("UnsupportedSpace: ")
    assert "train_language_model" in rec.reason


def test_rnn_cell_is_handed_to_the_language_model_trainer(tmp_path, monkeypatch):
    calls = []

    def fake(trial_id, experiment, architecture, trainer_config, store, cache_dir=None):
        calls.append((trial_id, experiment, trainer_config, cache_dir))
        return "the lm's record"

    monkeypatch.setitem(sys.modules, "kubenas.trainer.lm_child",
                        types.SimpleNamespace(train_language_model=fake))
    out = train_child("lm", "exp", RNN_CELL, {"bptt": 35}, LocalStore(tmp_path), cache_dir="/c")
    assert out == "the lm's record" and calls == [("lm", "exp", {"bptt": 35}, "/c")]


def test_nasbench201_is_not_trained_by_a_child(tmp_path):
    arch = Architecture.from_dict({"space": "nasbench201", "spec": {"edges": {
        e: "conv_3x3" for e in ("1<-0", "2<-0", "2<-1", "3<-0", "3<-1", "3<-2")}}})
    rec = train_child("nb", "exp", arch, {}, LocalStore(tmp_path))
    assert rec.status == "failed" and "NAS-Bench-201" in rec.reason


def test_trainer_config_errors_raise_naming_the_field(tmp_path, small_cnn):
    from kubenas.contracts import ContractError

    with pytest.raises(ContractError, match=r"^trainer\.epochs: must be an integer >= 1, got 0"):
        train_child("c", "exp", small_cnn, {"epochs": 0}, LocalStore(tmp_path))


def test_cifar10_from_the_store_end_to_end(tmp_path, small_cnn, cifar_folder_writer):
    store = LocalStore(tmp_path / "store")
    written = cifar_folder_writer(tmp_path / "src", per_batch=4, test=0)
    for name in written:
        store.put(f"datasets/cifar-10-batches-py/{name}", (tmp_path / "src" / name).read_bytes())
    cfg = {"dataset": {"name": "cifar10", "path": "datasets/cifar-10-batches-py/"},
           "epochs": 1, "batchSize": 8, "validationSize": 4}
    rec = train_child("c10", "exp", small_cnn, cfg, store, cache_dir=tmp_path / "cache")
    assert rec.status == "succeeded", rec.reason
    assert rec.extra["train_size"] == 16 and rec.extra["val_size"] == 4
    assert rec.extra["input_shape"] == [3, 32, 32]
    assert rec.extra["augment"] == {"crop_padding": 4, "horizontal_flip": True}


class OutageStore(LocalStore):
    """A store in an outage: checkpoint writes always fail; the first ``down`` writes of
    results and models fail too, then the store is back."""

    def __init__(self, root, down):
        super().__init__(root)
        self.down, self.refused = down, []

    def _outage(self, key):
        if key.startswith("checkpoints/") or self.down > 0:
            self.down -= not key.startswith("checkpoints/")
            self.refused.append(key)
            raise StorageError(f"{key}: connection refused")

    def put(self, key, data):
        self._outage(key)
        return super().put(key, data)

    def put_new(self, key, data):
        self._outage(key)
        return super().put_new(key, data)


def test_a_store_outage_neither_stops_training_nor_loses_the_result(tmp_path, small_cnn,
                                                                     monkeypatch):
    monkeypatch.setattr(child_mod.time, "sleep", lambda s: None)  # backoff without the wait
    store = OutageStore(tmp_path, down=3)
    rec = train_child("o", "exp", small_cnn, dict(CONFIG, epochs=2), store)
    assert rec.status == "succeeded" and [m.epoch for m in rec.metrics] == [1, 2]
    assert [k for k in store.refused if k.startswith("checkpoints/")] == [checkpoint_key("o")] * 2
    assert len([k for k in store.refused if not k.startswith("checkpoints/")]) == 3
    assert ResultRecord.from_json(store.get(result_key("o"))).to_dict() == rec.to_dict()
    assert store.exists(model_key("o"))


def test_the_result_write_gives_up_at_its_deadline(tmp_path, small_cnn, monkeypatch):
    monkeypatch.setenv(child_mod.WRITE_RETRY_ENV, "0")
    store = OutageStore(tmp_path, down=10 ** 6)
    with pytest.raises(StorageError, match="connection refused"):
        train_child("d", "exp", small_cnn, dict(CONFIG, epochs=1, saveModel=False), store)
    assert not store.exists(result_key("d"))

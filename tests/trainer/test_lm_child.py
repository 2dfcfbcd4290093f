"""The recurrent child: training on a slice of the real PTB, reward, failures, the storage
contract (idempotent result, checkpoint/resume) and the final test evaluation."""

from __future__ import annotations

import io
import math

import pytest
import torch

from kubenas.contracts import ContractError, ResultRecord
from kubenas.storage.local import LocalStore
from kubenas.trainer.builders.language_model import build_language_model
from kubenas.trainer.builders.rnn_cell import figure5_cell, lstm_cell, nas_cell
from kubenas.trainer.errors import ArchitectureError
from kubenas.trainer.lm_child import evaluate_test, train_language_model, train_lm
from kubenas.trainer.lm_config import LMConfig
from kubenas.trainer.reward import reward_from_perplexity

torch.set_num_threads(1)

# Tiny and fast: 16 units, a few thousand training tokens, a validation slice.
TINY = {"dataset": {"name": "ptb"}, "epochs": 2, "embeddingSize": 16, "hiddenSize": 16,
        "batchSize": 10, "bptt": 10, "maxTokens": 3000, "maxEvalTokens": 2000}


# -- reward, training, failures ---------------------------------------------------------------------

def test_reward_is_c_over_validation_perplexity_squared():
    assert reward_from_perplexity(100.0) == pytest.approx(80 / 100 ** 2)
    assert reward_from_perplexity(50.0, c=10) == pytest.approx(10 / 2500)


def test_tiny_real_training_beats_the_uniform_guess_and_never_reads_test(ptb_reads):
    asked = ptb_reads
    cfg = {"epochs": 2, "embeddingSize": 32, "hiddenSize": 32, "layers": 1, "dropout": 0.0,
           "recurrentDropout": 0.0, "batchSize": 10, "bptt": 20, "maxTokens": 15000,
           "maxEvalTokens": 10000, "seed": 0}
    out = train_lm(lstm_cell(), cfg)
    ppls = [m.extra["val_perplexity"] for m in out.metrics]
    assert len(out.metrics) == 2 and all(m.val_loss == pytest.approx(math.log(p)) for m, p in
                                         zip(out.metrics, ppls))
    print("tiny PTB run, validation perplexity per epoch:", ppls)
    assert min(ppls) < 1200, ppls                      # uniform over 10,000 words: 10,000
    assert out.reward == pytest.approx(80 / min(ppls) ** 2)
    assert out.extra["val_perplexity"] == min(ppls)
    assert asked and all("test" not in s for s in asked)   # the search never touches test


def test_a_diverging_child_is_a_failed_result_not_a_crash(tmp_path):
    store = LocalStore(tmp_path)
    rec = train_language_model("t-00001", "ptb-test", nas_cell(), dict(TINY, learningRate=1000,
                                                                          clipNorm=1e6), store)
    assert rec.status == "failed" and rec.reward is None
    assert rec.reason.startswith("Diverged: ")
    stored = ResultRecord.from_json(store.get("results/t-00001.json"))
    assert stored.status == "failed" and stored.reason == rec.reason
    assert not store.exists("checkpoints/t-00001/latest.pt")


def test_result_is_idempotent_and_an_interrupted_child_resumes(tmp_path):
    cfg = dict(TINY, epochs=3)
    # Uninterrupted reference run.
    ref = train_language_model("ref", "e", figure5_cell(), cfg, LocalStore(tmp_path / "a"))
    assert ref.status == "succeeded" and len(ref.metrics) == 3

    store = LocalStore(tmp_path / "b")

    class Killed(Exception):
        pass

    def die_after_first(m):
        if m.epoch == 1:
            raise Killed()
    with pytest.raises(Killed):
        train_language_model("t", "e", figure5_cell(), cfg, store, on_epoch=die_after_first)
    assert store.exists("checkpoints/t/latest.pt") and not store.exists("results/t.json")

    epochs = []
    rec = train_language_model("t", "e", figure5_cell(), cfg, store,
                                  on_epoch=lambda m: epochs.append(m.epoch))
    assert epochs == [2, 3]                                   # resumed after epoch 1
    assert rec.extra["attempt"] == 2 and rec.extra["resumed_from_epoch"] == 1
    assert [m.epoch for m in rec.metrics] == [1, 2, 3]
    # Same data cursor, learning rate, optimizer and RNG state: the same result.
    assert [m.train_loss for m in rec.metrics] == pytest.approx([m.train_loss for m in ref.metrics],
                                                                rel=1e-6)
    assert rec.reward == pytest.approx(ref.reward, rel=1e-6)
    assert not store.exists("checkpoints/t/latest.pt")
    # A rerun trains nothing and returns the record already written.
    again = train_language_model("t", "e", figure5_cell(), cfg, store,
                                    on_epoch=lambda m: pytest.fail("trained again"))
    assert again.to_dict() == ResultRecord.from_json(store.get("results/t.json")).to_dict()


def test_train_child_hands_rnn_cell_trials_to_the_language_model(tmp_path):
    from kubenas.trainer.child import train_child

    store = LocalStore(tmp_path)
    rec = train_child("c-1", "e", nas_cell().to_dict(), dict(TINY, epochs=1), store)
    assert rec.status == "succeeded" and rec.extra["vocab_size"] == 10_000
    assert rec.reward == pytest.approx(80 / rec.extra["val_perplexity"] ** 2)


def test_bad_architecture_is_a_failed_result(tmp_path):
    bad = figure5_cell().to_dict()
    bad["spec"]["nodes"][0]["activation"] = "swish"
    from kubenas.contracts import Architecture

    with pytest.raises(ContractError):
        Architecture.from_dict(bad)          # the contract refuses it first ...
    with pytest.raises(ArchitectureError):
        build_language_model(bad["spec"], 100, LMConfig())   # ... and so does the builder


# -- the final evaluation -------------------------------------------------------------------------------

@pytest.mark.filterwarnings("ignore:`torch.jit")
def test_evaluate_test_on_the_model_and_on_its_torchscript_export(tmp_path):
    store = LocalStore(tmp_path)
    rec = train_language_model("s-1", "e", lstm_cell(), dict(TINY, epochs=1, saveModel=True), store)
    assert rec.status == "succeeded" and rec.extra["model_key"] == "models/s-1.pt"
    exported = torch.jit.load(io.BytesIO(store.get("models/s-1.pt")))
    res = evaluate_test(exported, TINY, max_tokens=3000)
    assert set(res) >= {"test_perplexity", "test_loss", "test_accuracy", "val_perplexity"}
    assert 1 < res["test_perplexity"] < 10_000 and 2900 <= res["test_tokens"] <= 3000
    # The same numbers from the eager model with the same (best-validation) weights.
    out = train_lm(lstm_cell(), dict(TINY, epochs=1))
    eager = evaluate_test(out.model, TINY, max_tokens=3000)
    assert eager["test_perplexity"] == pytest.approx(res["test_perplexity"], rel=1e-5)

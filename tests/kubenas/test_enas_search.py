"""The ENAS loop on digits: it alternates shared-weight epochs and policy updates, derives
an architecture, resumes a killed run exactly, and does not collapse onto parameter-free
ops when a learnable op is clearly better."""

import pytest
import torch

from kubenas.contracts import Architecture, ContractError
from kubenas.controller.spaces import make_space
from kubenas.controller.strategies import make_strategy
from kubenas.enas.search import CHECKPOINT_KEY, EnasSearch
from kubenas.storage import open_store
from kubenas.trainer.config import TrainerConfig

TINY = {"layers": 2, "channels": 8, "poolingAt": [1], "ops": ["conv3x3", "sep_conv3x3", "maxpool3x3"]}
LOOP = {"controllerSteps": 6, "deriveSamples": 4, "checkpointEvery": 5}


def _search(tmp_path, space=TINY, loop=LOOP, epochs=3, on_step=None, max_samples=1000):
    torch.set_num_threads(1)
    strategy = make_strategy("enas", make_space("enas_macro", space), loop, seed=3)
    config = TrainerConfig.from_dict({"dataset": "digits", "epochs": epochs, "batchSize": 64,
                                      "learningRate": 0.1, "device": "cpu", "seed": 1})
    return EnasSearch(strategy, config, open_store(str(tmp_path)), max_samples, on_step=on_step)


def test_alternates_shared_epochs_and_policy_steps_then_derives(tmp_path):
    search = _search(tmp_path)
    out = search.run()
    assert search.strategy.version == 3 * LOOP["controllerSteps"]  # one update per reward
    assert [row["epoch"] for row in out["history"]] == [0, 1, 2]
    assert all(row["shared_loss_n"] == len(search.task.train) for row in out["history"])
    arch = Architecture.from_dict(out["architecture"])
    assert arch.space == "enas_macro" and len(out["candidates"]) == LOOP["deriveSamples"]
    assert out["val_batch_reward"] == max(c["val_batch_reward"] for c in out["candidates"])
    assert sum(out["op_histogram"]["ops"].values()) == TINY["layers"]
    # the shared weights learned something: the derived path beats chance (10 classes)
    assert out["val_batch_reward"] > 0.3


def test_budget_caps_the_policy_samples(tmp_path):
    search = _search(tmp_path, max_samples=4)
    out = search.run()
    assert out["policy_samples"] == 4 and out["epochs"] == 1


class Killed(Exception):
    pass


def test_a_killed_run_resumes_where_its_checkpoint_left_it(tmp_path):
    whole = _search(tmp_path / "whole").run()
    calls = []

    def kill_at_the_eighth_step(pos):
        calls.append(pos.phase)
        if len(calls) == 8:
            raise Killed  # between checkpoints: the steps after the last one are lost
    with pytest.raises(Killed):
        _search(tmp_path / "killed", on_step=kill_at_the_eighth_step).run()
    assert open_store(str(tmp_path / "killed")).exists(CHECKPOINT_KEY)
    resumed = _search(tmp_path / "killed")
    # killed at policy step 3 of epoch 0; the last checkpoint was the phase boundary
    assert resumed.resumed and (resumed.pos.epoch, resumed.pos.phase, resumed.pos.step) == (0, "policy", 0)
    again = resumed.run()
    for key in ("architecture", "candidates", "policy_version", "policy_samples"):
        assert again[key] == whole[key], key


def test_warmup_epochs_train_on_uniform_paths_without_policy_updates_and_resume_exactly(tmp_path):
    loop = {**LOOP, "warmupEpochs": 2, "deriveBatches": 3}
    whole = _search(tmp_path / "whole", loop=loop)
    initial = {k: v.clone() for k, v in whole.strategy.policy.state_dict().items()}
    out = whole.run()
    # two warm-up epochs: policy updates only after the third shared epoch
    assert whole.strategy.version == loop["controllerSteps"]
    assert [("reward" in row) for row in out["history"]] == [False, False, True]
    assert all(row["shared_loss_n"] == len(whole.task.train) for row in out["history"])
    assert any(not torch.equal(initial[k], v) for k, v in whole.strategy.policy.state_dict().items())
    assert out["derive_batches"] == 3
    calls = []

    def kill_in_warmup(pos):
        calls.append(pos)
        if len(calls) == 3:   # mid-epoch 0: the last checkpoint was at step 10
            raise Killed
    with pytest.raises(Killed):
        _search(tmp_path / "killed", loop=loop, on_step=kill_in_warmup).run()
    resumed = _search(tmp_path / "killed", loop=loop)
    assert resumed.resumed and (resumed.pos.epoch, resumed.pos.phase) == (0, "shared")
    again = resumed.run()
    for key in ("architecture", "candidates", "policy_version", "history"):
        assert again[key] == out[key], key


def test_derive_scores_each_candidate_on_the_same_validation_batches(tmp_path):
    search = _search(tmp_path, loop={**LOOP, "deriveBatches": 2}, epochs=1)
    out = search.run()
    assert out["derive_batches"] == 2 < len(search.task.val)
    best = Architecture.from_dict(out["architecture"]).spec
    expect = sum(search.task.reward(best, search.epochs, i) for i in range(2)) / 2
    assert out["val_batch_reward"] == pytest.approx(expect)
    assert out["val_batch_reward"] == max(c["val_batch_reward"] for c in out["candidates"])


def test_loop_options_are_checked_where_they_are_written():
    with pytest.raises(ContractError, match="strategyOptions.deriveBatches"):
        make_strategy("enas", make_space("enas_macro", TINY), {"deriveBatches": 0})
    with pytest.raises(ContractError, match="strategyOptions.warmupEpochs"):
        make_strategy("enas", make_space("enas_macro", TINY), {"warmupEpochs": -1})
    assert make_strategy("enas", make_space("enas_macro", TINY), {"warmupEpochs": 0}) \
        .loop_options()["warmupEpochs"] == 0


def test_policy_does_not_collapse_onto_parameter_free_ops(tmp_path):
    # conv3x3 vs max-pool: on digits the conv path is clearly better; the policy must move
    # towards it, not to the parameter-free op that the shared weights favour early.
    space = {"layers": 2, "channels": 8, "poolingAt": [], "ops": ["conv3x3", "maxpool3x3"],
             "skipConnections": False}
    search = _search(tmp_path, space=space, loop={**LOOP, "controllerSteps": 40,
                                                   "deriveSamples": 8}, epochs=3)
    plan = search.strategy.space.plan()
    conv = [0] * len(plan)
    before = float(search.strategy.policy.log_prob(plan, conv, with_entropy=False)[0].detach().exp())
    out = search.run()
    after = float(search.strategy.policy.log_prob(plan, conv, with_entropy=False)[0].detach().exp())
    assert after > before + 0.1, (before, after)
    assert out["op_histogram"]["ops"].get("conv3x3", 0) >= 1


# -- the recurrent cell on Penn Treebank -------------------------------------------------------

PTB = {"dataset": {"name": "ptb"}, "epochs": 2, "embeddingSize": 16, "hiddenSize": 16,
       "layers": 1, "batchSize": 10, "bptt": 10, "maxTokens": 2000, "dropout": 0.0,
       "recurrentDropout": 0.0, "learningRate": 20, "device": "cpu", "seed": 1}


def _ptb_search(tmp_path, on_step=None):
    torch.set_num_threads(1)
    strategy = make_strategy("enas", make_space("enas_rnn", {"nodes": 4}), LOOP, seed=3)
    return EnasSearch(strategy, PTB, open_store(str(tmp_path)), 1000, on_step=on_step)


def test_the_recurrent_cell_alternates_on_ptb_and_resumes_exactly(tmp_path):
    search = _ptb_search(tmp_path / "whole")
    whole = search.run()
    assert [row["epoch"] for row in whole["history"]] == [0, 1]
    assert all(row["shared_loss_n"] == len(search.task.train) == 20 for row in whole["history"])
    assert whole["history"][1]["shared_loss"] < whole["history"][0]["shared_loss"]
    assert search.strategy.version == 2 * LOOP["controllerSteps"]
    arch = Architecture.from_dict(whole["architecture"])
    assert arch.space == "enas_rnn" and whole["reward_name"] == "rewardC/perplexity"
    # 80 / perplexity: the supernet beats a uniform guess over the 10,000-word vocabulary
    assert 80 / 10_000 < whole["val_batch_reward"] == max(c["val_batch_reward"] for c in whole["candidates"])
    assert sum(whole["op_histogram"]["activations"].values()) == 4

    calls = []

    def kill_at_the_seventh_step(pos):
        calls.append(pos)
        if len(calls) == 7:
            raise Killed
    with pytest.raises(Killed):
        _ptb_search(tmp_path / "killed", on_step=kill_at_the_seventh_step).run()
    resumed = _ptb_search(tmp_path / "killed")
    assert resumed.resumed
    again = resumed.run()
    for key in ("architecture", "candidates", "policy_version", "policy_samples"):
        assert again[key] == whole[key], key

"""The recurrent child's trainer settings: defaults, errors that name the field, ``options``,
and what is taken from the image ``TrainerConfig``."""

from __future__ import annotations

import pytest

from kubenas.contracts import ContractError
from kubenas.trainer.lm_config import LMConfig, lm_config


def test_defaults_are_small_and_round_trip():
    cfg = LMConfig.from_dict({})
    assert (cfg.hidden_size, cfg.layers, cfg.reward_c, cfg.learning_rate) == (64, 2, 80.0, 20.0)
    assert LMConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("doc, field", [
    ({"bptt": 0}, "trainer.bptt"),
    ({"dropout": 1.0}, "trainer.dropout"),
    ({"learningRate": -1}, "trainer.learningRate"),
    ({"hidenSize": 32}, "trainer.hidenSize"),                     # typo: unknown field
    ({"options": {"hiddenSize": "big"}}, "trainer.options.hiddenSize"),
    ({"tieWeights": True, "embeddingSize": 32, "hiddenSize": 64}, "trainer.tieWeights"),
    ({"dataset": {"name": "cifar10"}}, "trainer.dataset.name"),
    ({"momentum": 0.5}, "trainer.momentum"),                      # an image-only setting
    ({"bptt": 20, "options": {"bptt": 30}}, "trainer.options.bptt"),  # given twice
])
def test_config_errors_name_the_field(doc, field):
    with pytest.raises(ContractError, match=rf"^{field.replace('.', r'[.]')}: "):
        LMConfig.from_dict(doc)


def test_typo_gets_a_suggestion():
    with pytest.raises(ContractError, match="did you mean 'hiddenSize'"):
        LMConfig.from_dict({"hidenSize": 32})


def test_settings_may_sit_under_options_and_the_experiment_validator_uses_them():
    from kubenas.trainer.config import TrainerConfig, validate_trainer_config

    cfg = LMConfig.from_dict({"epochs": 3, "options": {"bptt": 20, "rewardC": 55}})
    assert (cfg.epochs, cfg.bptt, cfg.reward_c) == (3, 20, 55.0)
    with pytest.raises(ContractError, match=r"^spec[.]trainer[.]bptt: "):
        validate_trainer_config({"bptt": -1}, space="rnn_cell", where="spec.trainer")
    # From the image TrainerConfig (image defaults already filled in): options and
    # non-default shared keys only, so lr 0.1 / batch 64 do not leak into the LM.
    tc = TrainerConfig.from_dict({"dataset": {"name": "ptb"}, "epochs": 2,
                                  "options": {"learningRate": 5, "hiddenSize": 32,
                                              "embeddingSize": 32}})
    cfg = lm_config(tc)
    assert (cfg.epochs, cfg.learning_rate, cfg.batch_size, cfg.hidden_size) == (2, 5.0, 20, 32)

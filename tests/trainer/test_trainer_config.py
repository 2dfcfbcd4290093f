"""TrainerConfig: §4.1 defaults, field-naming errors, the experiment loader's entry point."""

from __future__ import annotations

import pytest

from kubenas.contracts import ContractError
from kubenas.trainer.config import TrainerConfig, validate_trainer_config


def test_defaults_are_the_papers():
    c = TrainerConfig.from_dict({})
    assert (c.learning_rate, c.momentum, c.nesterov, c.weight_decay) == (0.1, 0.9, True, 1e-4)
    assert (c.reward_window, c.reward_exponent) == (5, 3.0)
    assert c.dataset.name == "digits" and c.dataset.path is None
    assert c.validation_size == 0.1 and c.max_parameters == 5_000_000 and c.device == "auto"
    assert c.save_model is True  # the run's outputs/best_model.pt needs each child's model


def test_design_doc_example_round_trips():
    doc = {"dataset": {"name": "cifar10", "path": "s3://b/datasets/cifar-10-batches-py"},
           "epochs": 50, "batchSize": 128, "learningRate": 0.1, "momentum": 0.9,
           "nesterov": True, "weightDecay": 0.0001, "rewardWindow": 5, "rewardExponent": 3,
           "validationSize": 5000, "maxParameters": 5000000, "seed": 2, "lrSchedule": "step",
           "numThreads": 2, "device": "cuda:1", "horizontalFlip": False, "cropPadding": 2,
           "channelsLast": False, "saveModel": False, "augment": True, "evalBatchSize": 100}
    c = TrainerConfig.from_dict(doc)
    assert c.validation_size == 5000 and c.epochs == 50 and c.dataset.name == "cifar10"
    assert TrainerConfig.from_dict(c.to_dict()) == c
    assert TrainerConfig.from_dict({"dataset": "fashion_mnist"}).dataset.name == "fashion_mnist"


@pytest.mark.parametrize("doc, message", [
    ({"epochs": 0}, "trainer.epochs: must be an integer >= 1, got 0"),
    ({"epochs": True}, "trainer.epochs: must be an integer >= 1, got True"),
    ({"batchSize": 2.5}, "trainer.batchSize: must be an integer >= 1, got 2.5"),
    ({"learningRate": -1}, "trainer.learningRate: must be a number in (0, 1000], got -1"),
    ({"momentum": 1.5}, "trainer.momentum: must be a number in [0, 1), got 1.5"),
    ({"weightDecay": "x"}, "trainer.weightDecay: must be a number >= 0, got 'x'"),
    ({"validationSize": 1.0}, "trainer.validationSize: must be a fraction in (0, 1) or a positive count"),
    ({"validationSize": 0}, "trainer.validationSize: must be a fraction in (0, 1) or a positive count"),
    ({"maxParameters": 0}, "trainer.maxParameters: must be an integer >= 1, got 0"),
    ({"dataset": {"name": "imagenet"}}, "trainer.dataset.name: must be one of"),
    ({"dataset": {"name": "digits", "root": "/x"}}, "trainer.dataset.root: unknown field"),
    ({"nesterov": True, "momentum": 0}, "trainer.nesterov: Nesterov momentum needs momentum > 0"),
    ({"lrSchedule": "linear"}, "trainer.lrSchedule: must be one of ['cosine', 'step', 'constant']"),
    ({"device": "tpu"}, "trainer.device: must be auto, cpu, cuda or cuda:N"),
    ({"epoch": 3}, "trainer.epoch: unknown field (did you mean 'epochs'?)"),
    ({"options": []}, "trainer.options: must be a mapping"),
])
def test_errors_name_the_field(doc, message):
    with pytest.raises(ContractError) as info:
        TrainerConfig.from_dict(doc)
    assert str(info.value).startswith(message)


def test_where_prefixes_the_field_path():
    with pytest.raises(ContractError, match=r"^spec\.trainer\.epochs: "):
        TrainerConfig.from_dict({"epochs": -1}, where="spec.trainer")


def test_validate_trainer_config_for_the_cnn_space():
    doc = {"dataset": {"name": "digits"}, "epochs": 2}
    assert validate_trainer_config(doc, space="cnn", where="spec.trainer") == doc
    with pytest.raises(ContractError, match=r"^spec\.trainer\.dataset\.name: 'ptb' is the"):
        validate_trainer_config({"dataset": {"name": "ptb"}}, space="cnn", where="spec.trainer")
    with pytest.raises(ContractError, match=r"^spec\.trainer\.batchSize"):
        validate_trainer_config({"batchSize": 0}, space="cnn", where="spec.trainer")


def test_the_dataset_shorthand_names_the_field_it_is_in():
    assert TrainerConfig.from_dict({"dataset": "fashion_mnist"}, where="spec.trainer").dataset.name == "fashion_mnist"
    with pytest.raises(ContractError, match=r"^spec\.trainer\.dataset: must be one of"):
        TrainerConfig.from_dict({"dataset": "x"}, where="spec.trainer")

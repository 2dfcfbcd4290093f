"""spec.final: the final phase's fields (kubenas.experiment.parse_final)."""

from __future__ import annotations

import copy

import pytest

from kubenas.contracts import ContractError
from kubenas.experiment import (MAX_GRID_POINTS, SEARCH_EPOCHS_DEFAULT, default_grid,
                                parse_experiment)

BASE = {"metadata": {"name": "x"},
        "spec": {"search": {"space": "cnn"}, "budget": {"maxTrials": 4},
                 "trainer": {"epochs": 6}}}


def parse(final, space="cnn", trainer=None):
    doc = copy.deepcopy(BASE)
    doc["spec"]["search"]["space"] = space
    if trainer is not None:
        doc["spec"]["trainer"] = trainer
    if final is not KeyError:
        doc["spec"]["final"] = final
    return parse_experiment(doc)


def test_absent_means_no_final_phase():
    assert parse(KeyError).final is None and parse(None).final is None


def test_defaults_are_the_papers_axes_per_space():
    f = parse({}).final
    assert f == {"topK": 1, "grid": default_grid("cnn", 6), "epochs": 24,
                 "trainOn": "train+validation", "sizes": [], "searchEpochs": 6}
    assert set(f["grid"]) == {"learningRate", "weightDecay", "bnEpsilon", "lrDecayEpoch"}
    assert f["grid"]["lrDecayEpoch"] == [3, 5]
    p = parse({}, space="rnn_cell", trainer={"dataset": "ptb"}).final
    assert set(p["grid"]) == {"learningRate", "initRange", "dropout", "lrDecayEpoch"}
    assert p["searchEpochs"] == SEARCH_EPOCHS_DEFAULT["rnn_cell"] and p["epochs"] == 16


def test_search_epoch_defaults_are_the_trainers():
    from kubenas.trainer.config import TrainerConfig
    from kubenas.trainer.lm_config import LMConfig

    assert SEARCH_EPOCHS_DEFAULT == {"cnn": TrainerConfig().epochs, "rnn_cell": LMConfig().epochs,
                                     "enas_macro": TrainerConfig().epochs, "enas_rnn": LMConfig().epochs}


def test_a_given_grid_replaces_the_default_and_every_field_is_set():
    f = parse({"topK": 3, "grid": {"learningRate": [0.01, 0.1]}, "epochs": 9, "trainOn": "train",
               "sizes": [1, 2.5]}).final
    assert f["grid"] == {"learningRate": [0.01, 0.1]} and f["topK"] == 3 and f["epochs"] == 9
    assert f["trainOn"] == "train" and f["sizes"] == [1, 2.5]


@pytest.mark.parametrize("final,space,match", [
    ({"topk": 1}, "cnn", r"spec\.final\.topk: unknown field \(did you mean 'topK'\?\)"),
    ({"grid": {"dropout": [0.1]}}, "cnn", r"spec\.final\.grid\.dropout: unknown grid axis"),
    ({"grid": {"bnEpsilon": [0.1]}}, "rnn_cell", r"spec\.final\.grid\.bnEpsilon: unknown grid axis"),
    ({"grid": {"learningRate": [0]}}, "cnn", r"spec\.final\.grid\.learningRate\[0\]: must be"),
    ({"grid": {"learningRate": [0.1, 0.1]}}, "cnn", r"spec\.final\.grid\.learningRate: values must be distinct"),
    ({"grid": {}}, "cnn", r"spec\.final\.grid: must name at least one axis"),
    ({"grid": {"learningRate": []}}, "cnn", r"spec\.final\.grid\.learningRate: must list"),
    ({"topK": 17}, "cnn", r"spec\.final\.topK: must be an integer <= 16"),
    ({"epochs": 0}, "cnn", r"spec\.final\.epochs: must be an integer >= 1"),
    ({"trainOn": "test"}, "cnn", r"spec\.final\.trainOn: must be one of"),
    ({"sizes": [0]}, "cnn", r"spec\.final\.sizes\[0\]"),
    ({"sizes": [64.5]}, "rnn_cell", r"spec\.final\.sizes\[0\]: must be an integer"),
    ({}, "nasbench201", r"spec\.final: no final phase for the nasbench201 space"),
])
def test_bad_fields_are_refused_naming_the_full_path(final, space, match):
    trainer = {"dataset": "ptb"} if space == "rnn_cell" else None
    with pytest.raises(ContractError, match=match):
        parse(final, space=space, trainer=trainer)


def test_the_grid_size_is_capped():
    axes = {"learningRate": [0.01 * i for i in range(1, 9)], "weightDecay": [0.0, 1e-4, 2e-4, 3e-4],
            "bnEpsilon": [1e-5, 1e-4, 1e-3, 1e-2], "momentum": [0.8, 0.9]}   # 256 points
    assert len(parse({"grid": axes}).final["grid"]) == 4
    axes["batchSize"] = [32, 64]
    with pytest.raises(ContractError, match=rf"spec\.final\.grid: 512 grid points; at most "
                                            rf"{MAX_GRID_POINTS}"):
        parse({"grid": axes})


def test_every_space_with_a_final_phase_has_grid_axes_and_a_retrain():
    from kubenas.contracts import names
    from kubenas.experiment import _GRID_AXES, _DEFAULT_GRID
    from kubenas.trainer import validate_trainer_config

    assert set(_GRID_AXES) == set(_DEFAULT_GRID) == set(names.FINAL_SPACES)
    for space in names.FINAL_SPACES:   # every axis is a setting that space's child accepts
        for axis, (whole, low, high, _) in _GRID_AXES[space].items():
            value = max(1, low) if whole else (low + min(high, 1)) / 2
            validate_trainer_config({axis: value}, space=space, where=f"{space}.{axis}")

"""The final phase's retrain (issue 12, §4.1): train the chosen setting with the final
schedule, then evaluate on the **test split, once** — the one place a child reads it.

``train_child`` hands a trial here when its trainer section carries ``finalRun``
(``{"trainOn": "train" | "train+validation"}``), which only the final phase
(``kubenas.controller.final``) sets; ``spec.trainer`` refuses the key. The record's
``extra.test`` says what was measured: ``{"split": "test", "evaluations": 1, "accuracy",
"loss", "examples"}``. The measurement is also written create-only to
``final/test-evaluations/<trial_id>.json`` before the record: an attempt resumed after it
(killed before its result was written) takes that measurement instead of evaluating again.
The TorchScript model goes to ``models/<trial_id>.pt`` and the ONNX one to
``models/<trial_id>.onnx``.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Mapping

from kubenas.contracts import Architecture, ContractError, ResultRecord
from kubenas.storage import AlreadyExists, NotFound, ObjectStore
from kubenas.trainer.config import TrainerConfig

log = logging.getLogger("kubenas.trainer")

TRAIN_ON = ("train", "train+validation")


def test_evaluation_key(trial_id: str) -> str:
    return f"final/test-evaluations/{trial_id}.json"


def onnx_key(trial_id: str) -> str:
    return f"models/{trial_id}.onnx"


def evaluate_test_once(store: ObjectStore, trial_id: str, model, config: TrainerConfig,
                       cache_dir=None) -> dict:
    """Accuracy and loss of ``model`` on the test split, measured at most once per trial."""
    key = test_evaluation_key(trial_id)
    try:
        return json.loads(store.get(key))
    except NotFound:
        pass
    from kubenas.trainer.data import load_dataset
    from kubenas.trainer.train import evaluate

    _, test, info = load_dataset(config.dataset.name, config.dataset.path, split="test",
                                 store=store, cache_dir=cache_dir)
    device = next(model.parameters()).device
    loss, acc = evaluate(model, test.to(device), config.eval_batch_size)
    result = {"split": "test", "evaluations": 1, "accuracy": acc, "loss": loss,
              "examples": len(test), "dataset": info.name}
    try:
        store.put_new(key, json.dumps(result).encode())
    except AlreadyExists:   # another attempt measured first: its measurement is the one
        return json.loads(store.get(key))
    log.info("%s: test accuracy %.4f on %d examples (evaluated once)", trial_id, acc, len(test))
    return result


def _exports(store: ObjectStore, trial_id: str, model, example) -> dict:
    from kubenas.trainer.export import onnx_bytes

    try:
        data = onnx_bytes(model, example)
    except Exception as exc:  # noqa: BLE001 - the TorchScript model still ships
        log.warning("%s: ONNX export failed: %s", trial_id, exc)
        return {"onnx_error": f"{type(exc).__name__}: {exc}"[:500]}
    store.put(onnx_key(trial_id), data)
    return {"onnx_key": onnx_key(trial_id)}


def train_final_child(trial_id: str, experiment: str, architecture: Architecture,
                      trainer_config: Mapping[str, Any], final: Mapping[str, Any],
                      store: ObjectStore, cache_dir=None) -> ResultRecord:
    """Retrain ``architecture`` as the final run says, test once, write the record."""
    from kubenas.trainer.child import run_attempt, train_cnn

    train_on = final.get("trainOn") if isinstance(final, Mapping) else None
    if train_on not in TRAIN_ON:
        raise ContractError(f"trainer.finalRun.trainOn: must be one of {list(TRAIN_ON)}, "
                            f"got {train_on!r}")
    if architecture.space != "cnn":
        raise ContractError(f"trainer.finalRun: the final retrain is implemented for the cnn "
                            f"space, not {architecture.space!r}")
    config = TrainerConfig.from_dict(dict(trainer_config, saveModel=True))
    merge = train_on == "train+validation"

    def after_fit(model, example) -> dict:
        return {"test": evaluate_test_once(store, trial_id, model, config, cache_dir),
                "trainOn": train_on, "validationInTraining": merge,
                **_exports(store, trial_id, model, example)}

    return run_attempt(
        trial_id, experiment, architecture, store,
        lambda resume, on_epoch: train_cnn(architecture, config, resume=resume,
                                           on_epoch=on_epoch, cache_dir=cache_dir, store=store,
                                           merge_validation=merge, after_fit=after_fit),
        save_model=True, kind="cnn (final retrain)")

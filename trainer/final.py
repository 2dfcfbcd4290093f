"""The final phase's retrain (issue 12, §4.1): train the chosen setting with the final
schedule, then evaluate on the **test split, once** — the one place a child reads it.

``train_child`` hands a trial here when its trainer section carries ``finalRun``
(``{"trainOn": "train" | "train+validation"}``), which only the final phase
(``kubenas.controller.final``) sets; ``spec.trainer`` refuses the key. The record's
``extra.test`` says what was measured: ``{"split": "test", "evaluations": 1, "metric",
"accuracy", "loss", "examples"}``, ``metric`` naming the one that matters: ``accuracy``
for an image child, ``perplexity`` (also given) for a language model (§4.2). The measurement is also written create-only to
``final/test-evaluations/<trial_id>.json`` before the record: an attempt resumed after it
(killed before its result was written) takes that measurement instead of evaluating again.
The TorchScript model goes to ``models/<trial_id>.pt`` and the ONNX one to
``models/<trial_id>.onnx``.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Mapping

from kubenas.contracts import Architecture, ContractError, ResultRecord, names
from kubenas.storage import AlreadyExists, NotFound, ObjectStore
from kubenas.trainer.config import TrainerConfig

log = logging.getLogger("kubenas.trainer")

TRAIN_ON = ("train", "train+validation")


def test_evaluation_key(trial_id: str) -> str:
    return f"final/test-evaluations/{trial_id}.json"


def onnx_key(trial_id: str) -> str:
    return f"models/{trial_id}.onnx"


def _image_test(model, config: TrainerConfig, store: ObjectStore, cache_dir) -> dict:
    from kubenas.trainer.data import load_dataset
    from kubenas.trainer.train import evaluate

    _, test, info = load_dataset(config.dataset.name, config.dataset.path, split="test",
                                 store=store, cache_dir=cache_dir)
    device = next(model.parameters()).device
    loss, acc = evaluate(model, test.to(device), config.eval_batch_size)
    return {"metric": "accuracy", "accuracy": acc, "loss": loss, "examples": len(test),
            "dataset": info.name}


def _lm_test(model, config, store: ObjectStore, cache_dir) -> dict:
    from kubenas.trainer.lm_child import evaluate_test

    m = evaluate_test(model, config, store=store, cache_dir=cache_dir)
    return {"metric": "perplexity", "perplexity": m["test_perplexity"],
            "accuracy": m["test_accuracy"], "loss": m["test_loss"], "examples": m["test_tokens"],
            "dataset": "ptb"}


def evaluate_test_once(store: ObjectStore, trial_id: str, model, config,
                       cache_dir=None) -> dict:
    """``model`` on the test split, measured at most once per trial: accuracy and loss of an
    image child (``config`` a TrainerConfig), perplexity too of a language model (an LMConfig)."""
    key = test_evaluation_key(trial_id)
    try:
        return json.loads(store.get(key))
    except NotFound:
        pass
    measure = _image_test if isinstance(config, TrainerConfig) else _lm_test
    result = {"split": "test", "evaluations": 1, **measure(model, config, store, cache_dir)}
    try:
        store.put_new(key, json.dumps(result).encode())
    except AlreadyExists:   # another attempt measured first: its measurement is the one
        return json.loads(store.get(key))
    log.info("%s: test %s %.4f on %d examples (evaluated once)", trial_id, result["metric"],
             result[result["metric"]], result["examples"])
    return result


def _exports(store: ObjectStore, trial_id: str, model, example) -> dict:
    from kubenas.trainer.export import onnx_bytes

    try:   # a language model reads token ids (seq, batch); an image child, images
        data = onnx_bytes(model, example, "images" if example.is_floating_point() else "tokens")
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
    from kubenas.trainer.lm_child import train_lm
    from kubenas.trainer.lm_config import lm_config

    train_on = final.get("trainOn") if isinstance(final, Mapping) else None
    if train_on not in TRAIN_ON:
        raise ContractError(f"trainer.finalRun.trainOn: must be one of {list(TRAIN_ON)}, "
                            f"got {train_on!r}")
    if architecture.space not in names.FINAL_SPACES:
        raise ContractError(f"trainer.finalRun: the final retrain is implemented for the "
                            f"{' and '.join(names.FINAL_SPACES)} spaces, not {architecture.space!r}")
    lm = architecture.space in names.LM_SPACES
    settings = dict(trainer_config, saveModel=True)
    config = lm_config(settings) if lm else TrainerConfig.from_dict(settings)
    train = train_lm if lm else train_cnn
    merge = train_on == "train+validation"

    def after_fit(model, example) -> dict:
        return {"test": evaluate_test_once(store, trial_id, model, config, cache_dir),
                "trainOn": train_on, "validationInTraining": merge,
                **_exports(store, trial_id, model, example)}

    return run_attempt(
        trial_id, experiment, architecture, store,
        lambda resume, on_epoch: train(architecture, config, resume=resume, on_epoch=on_epoch,
                                       cache_dir=cache_dir, store=store,
                                       merge_validation=merge, after_fit=after_fit),
        save_model=True, kind=f"{architecture.space} (final retrain)")

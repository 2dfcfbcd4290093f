"""One child: train the architecture a trial describes and write its result, exactly once.

``train_child`` is what ``kubenas train-child`` (a local process or a Kubernetes Job's pod)
runs. It is safe to run twice for the same trial and safe to kill at any point:

1. ``results/<trial_id>.json`` already in the store -> return it, train nothing;
2. ``checkpoints/<trial_id>/latest.pt`` in the store -> resume after its epoch;
3. train, saving that checkpoint (``store.put``) after every epoch; a checkpoint the store
   refuses (an outage) is skipped with a warning and training goes on;
4. write the result create-only (``put_new``); if another attempt got there first, its
   record wins and is returned. While the store is unreachable this write (and the model's)
   is retried with backoff for ``KUBENAS_WRITE_RETRY_SECONDS`` (default 1800 s): a few
   minutes of S3 downtime must not throw away a trained child;
5. delete the checkpoint.

Failures the architecture is to blame for (``kubenas.trainer.errors.ChildFailure``: it
cannot be built, exceeds ``maxParameters``, runs out of memory, its first step fails)
become a *failed* record with the reason. Environment errors (dataset missing, store
unreachable, bad trainer config) propagate: the process exits non-zero and is retried.

Spaces: "cnn" and "enas_macro" (an ENAS search's derived architecture, as a standalone
network) are trained here (``train_cnn``); "rnn_cell" is handed whole to
``kubenas.trainer.lm_child.train_language_model`` (same arguments, same storage contract),
imported lazily: without it the trial gets a failed record saying so. "nasbench201" is
answered from a table by the controller and never reaches a child (failed record).
"""

from __future__ import annotations

import dataclasses
import io
import logging
import os
import random
import time
from datetime import datetime, timezone
from typing import Any, Callable, Mapping, Optional, Union

import torch

from kubenas.contracts import Architecture, EpochMetrics, ResultRecord, names, result_key
from kubenas.storage import AlreadyExists, NotFound, ObjectStore, StorageError
from kubenas.trainer.builders import cnn as cnn_builder
from kubenas.trainer.config import TrainerConfig, require_image_dataset
from kubenas.trainer.cost import attempt_seconds, measure_cost
from kubenas.trainer.data import load_dataset
from kubenas.trainer.data.augment import BatchAugment, to_float
from kubenas.trainer.data.base import ImageSplit, channel_stats
from kubenas.trainer.errors import ChildFailure, TooLarge, UnsupportedSpace
from kubenas.trainer.reward import compute_reward
from kubenas.trainer.train import TrainOutcome, fit, resolve_device

log = logging.getLogger("kubenas.trainer")

WRITE_RETRY_ENV = "KUBENAS_WRITE_RETRY_SECONDS"
# The trainer key the final phase's retrain carries ({trainOn}): train, then evaluate on the
# test split once (kubenas.trainer.final). spec.trainer refuses it (an unknown field).
FINAL_RUN_KEY = "finalRun"
DEFAULT_WRITE_RETRY_SECONDS = 1800.0


def checkpoint_key(trial_id: str) -> str:
    return f"checkpoints/{trial_id}/latest.pt"


def model_key(trial_id: str) -> str:
    return f"models/{trial_id}.pt"


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _seconds_between(a: str, b: str) -> float:
    fmt = "%Y-%m-%dT%H:%M:%S.%fZ"
    return (datetime.strptime(b, fmt) - datetime.strptime(a, fmt)).total_seconds()


# -- the CNN trainer ----------------------------------------------------------------------

def train_cnn(architecture: Architecture, config: TrainerConfig, *,
              resume: Optional[dict] = None, on_epoch: Optional[Callable[[dict], None]] = None,
              cache_dir=None, store: Optional[ObjectStore] = None,
              merge_validation: bool = False,
              after_fit: Optional[Callable[..., dict]] = None) -> TrainOutcome:
    """Build the CNN child for the configured image dataset, train it, return the outcome.

    ``merge_validation`` (the final run's trainOn: train+validation): train on both splits
    (the validation metrics are then of data trained on). ``after_fit(model, example)``:
    more ``extra`` for the record (the final run's test evaluation and ONNX export)."""
    require_image_dataset(config)
    device = resolve_device(config.device)
    train, val, info = load_dataset(config.dataset.name, config.dataset.path,
                                    validation_size=config.validation_size, seed=config.seed,
                                    store=store, cache_dir=cache_dir)
    if merge_validation:
        train = ImageSplit(torch.cat([train.images, val.images]),
                           torch.cat([train.labels, val.labels]))
        info = dataclasses.replace(info, train_size=len(train))
        info.mean, info.std = channel_stats(train.images)
    torch.manual_seed(config.seed)
    model = _image_model(architecture, info, config)
    params = sum(p.numel() for p in model.parameters())
    crop = config.crop_padding if config.crop_padding is not None else info.crop_padding
    flip = config.horizontal_flip if config.horizontal_flip is not None else info.horizontal_flip
    augment = BatchAugment(crop, flip) if config.augment else BatchAugment(0, False)
    log.info("cnn child: %s parameters on %s; %s train / %s val %s images; %r",
             f"{params:,}", device, info.train_size, info.val_size, info.input_shape, augment)
    metrics = fit(model, train, val, config, augment=augment, device=device, resume=resume,
                  on_epoch=on_epoch)
    reward = compute_reward([m.val_acc for m in metrics], config.reward_window,
                            config.reward_exponent)
    extra = {"params": params, "device": str(device), "dataset": info.name,
             "train_size": info.train_size, "val_size": info.val_size,
             "input_shape": list(info.input_shape),
             "augment": {"crop_padding": augment.crop_padding,
                         "horizontal_flip": augment.horizontal_flip}}
    example = to_float(val.images[:2])
    if after_fit is not None:
        extra.update(after_fit(model, example))
    return TrainOutcome(metrics=metrics, reward=reward, extra=extra, model=model,
                        example_input=example)


def _image_model(architecture: Architecture, info, config: TrainerConfig):
    """The network of an image child: the paper's CNN (§3.1-3.4), or a standalone ENAS macro
    child (an ``enas`` search's derived architecture, trained from scratch)."""
    if architecture.space != "enas_macro":
        return cnn_builder.build_cnn(architecture, info.input_shape, info.num_classes, info.mean,
                                     info.std, max_parameters=config.max_parameters,
                                     bn_epsilon=config.bn_epsilon,
                                     width_multiplier=config.width_multiplier)
    from kubenas.trainer.enas.networks import build_enas_child

    model = build_enas_child(architecture, info.input_shape, info.num_classes, info.mean, info.std)
    params = sum(p.numel() for p in model.parameters())
    if config.max_parameters is not None and params > config.max_parameters:
        raise TooLarge(f"{params:,} parameters > maxParameters {config.max_parameters:,}")
    return model


# Spaces whose children train here (``train_cnn``); rnn_cell children in lm_child.
IMAGE_SPACES = ("cnn", "enas_macro")


# -- the child ----------------------------------------------------------------------------

def _existing_result(store: ObjectStore, key: str) -> Optional[ResultRecord]:
    try:
        return ResultRecord.from_json(store.get(key), where=key)
    except NotFound:
        return None


def _load_checkpoint(store: ObjectStore, key: str, architecture: Architecture) -> Optional[dict]:
    try:
        data = store.get(key)
    except NotFound:
        return None
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a damaged checkpoint only costs the redo
        log.warning("%s: unreadable checkpoint, starting over (%s)", key, exc)
        return None
    if not isinstance(state, dict) or state.get("architecture_key") != architecture.key():
        log.warning("%s: checkpoint is for another architecture, starting over", key)
        return None
    return state


def write_retry_seconds() -> float:
    """How long a child keeps retrying its final writes while the store is unreachable."""
    raw = os.environ.get(WRITE_RETRY_ENV)
    try:
        return float(raw) if raw else DEFAULT_WRITE_RETRY_SECONDS
    except ValueError:
        raise ValueError(f"{WRITE_RETRY_ENV}: must be a number of seconds, got {raw!r}") from None


def _until_stored(what: str, fn: Callable[[], Any], deadline: float) -> Any:
    """fn(), retried with jittered exponential backoff on StorageError until ``deadline``
    (time.monotonic()); then the last error propagates."""
    delay = 0.5
    while True:
        try:
            return fn()
        except StorageError as exc:
            if time.monotonic() + delay > deadline:
                raise
            log.warning("%s: store unavailable (%s); retrying in %.1f s", what, exc, delay)
        time.sleep(delay * random.uniform(0.5, 1.0))
        delay = min(delay * 2, 30.0)


def _publish(store: ObjectStore, record: ResultRecord,
             deadline: Optional[float] = None) -> ResultRecord:
    """Write the result, with the child's cost up to now, create-only; if one is there
    already, the first one wins."""
    key = result_key(record.trial_id)
    record = dataclasses.replace(record, cost=record.cost or measure_cost())
    deadline = time.monotonic() + write_retry_seconds() if deadline is None else deadline

    def write() -> ResultRecord:
        try:
            store.put_new(key, record.to_json())
        except AlreadyExists:
            log.info("%s: another attempt wrote the result first; returning it", record.trial_id)
            return ResultRecord.from_json(store.get(key), where=key)
        return record

    return _until_stored(f"{key}: result write", write, deadline)


def _timings(started_at: str, metrics: list) -> dict:
    finished_at = _now()
    return {"started_at": started_at, "finished_at": finished_at,
            "train_seconds": round(sum(m.seconds or 0.0 for m in metrics), 3),
            "total_seconds": round(_seconds_between(started_at, finished_at), 3)}


def _failed(experiment: str, trial_id: str, architecture: Architecture, exc: ChildFailure,
            started_at: str, extra: Optional[dict] = None) -> ResultRecord:
    return ResultRecord(experiment=experiment, trial_id=trial_id, architecture=architecture,
                        status="failed", reason=str(exc), metrics=list(exc.metrics),
                        timings=_timings(started_at, exc.metrics), extra=dict(extra or {}))


def train_child(trial_id: str, experiment: str,
                architecture: Union[Architecture, Mapping[str, Any]],
                trainer_config: Union[TrainerConfig, Mapping[str, Any], None],
                store: ObjectStore, cache_dir=None) -> ResultRecord:
    """Train ``architecture`` for trial ``trial_id`` and write (or return) its result."""
    existing = _existing_result(store, result_key(trial_id))
    if existing is not None:
        log.info("%s: result already written (%s), not training", trial_id, existing.status)
        return existing
    # A malformed description is the caller's bug, not the trial's: it raises ContractError
    # (a record holding it could never be read back). Every well-formed CNN description is
    # buildable (§3.4's rules); ArchitectureError below stays as the builder's safety net.
    architecture = Architecture.from_dict(
        architecture.to_dict() if isinstance(architecture, Architecture) else architecture)
    if isinstance(trainer_config, Mapping) and FINAL_RUN_KEY in trainer_config:
        from kubenas.trainer.final import train_final_child

        rest = {k: v for k, v in trainer_config.items() if k != FINAL_RUN_KEY}
        return train_final_child(trial_id, experiment, architecture, rest,
                                 trainer_config[FINAL_RUN_KEY], store, cache_dir)
    if architecture.space in names.LM_SPACES:
        try:
            from kubenas.trainer.lm_child import train_language_model
        except ImportError as exc:
            return _publish(store, _failed(experiment, trial_id, architecture, UnsupportedSpace(
                "the rnn_cell trainer (kubenas.trainer.lm_child.train_language_model) is not "
                f"available in this build: {exc}"), _now()))
        raw = trainer_config.to_dict() if isinstance(trainer_config, TrainerConfig) \
            else dict(trainer_config or {})
        return train_language_model(trial_id, experiment, architecture, raw, store,
                                    cache_dir=cache_dir)
    if architecture.space not in IMAGE_SPACES:
        return _publish(store, _failed(experiment, trial_id, architecture, UnsupportedSpace(
            f"space {architecture.space!r} is looked up in the NAS-Bench-201 table by the "
            "controller, not trained by a child"), _now()))
    return _train_cnn_child(trial_id, experiment, architecture,
                            TrainerConfig.from_dict(trainer_config), store, cache_dir)


@dataclasses.dataclass(frozen=True)
class _Attempt:
    """Which attempt at a trial this is, carried over from the checkpoint it resumes."""

    started_at: str
    number: int
    resumed_from: Optional[int]     # epochs the checkpoint had done; None: a fresh start
    earlier_seconds: float          # spent by the attempts before

    @classmethod
    def after(cls, state: Optional[dict]) -> "_Attempt":
        if not state:
            return cls(_now(), 1, None, 0.0)
        return cls(state.get("started_at", _now()), int(state.get("attempt", 0)) + 1,
                   int(state["epoch"]), float(state.get("spent_seconds", 0.0)))


def _checkpointer(store: ObjectStore, trial_id: str, architecture: Architecture,
                  attempt: _Attempt, on_epoch: Optional[Callable[[EpochMetrics], None]]
                  ) -> Callable[[dict], None]:
    """The ``on_epoch`` a trainer gets: store its checkpoint dict, then call ``on_epoch``."""
    def checkpoint(s: dict) -> None:
        s = dict(s, trial_id=trial_id, architecture_key=architecture.key(),
                 started_at=attempt.started_at, attempt=attempt.number,
                 spent_seconds=attempt.earlier_seconds + attempt_seconds())
        buf = io.BytesIO()
        torch.save(s, buf)
        try:
            store.put(checkpoint_key(trial_id), buf.getvalue())
        except StorageError as exc:  # an outage costs at most a resume point, never the child
            log.warning("%s: checkpoint after epoch %s not saved, training on: %s",
                        trial_id, s.get("epoch"), exc)
        if on_epoch is not None:
            on_epoch(EpochMetrics(**s["metrics"][-1]))

    return checkpoint


def _succeeded(experiment: str, trial_id: str, architecture: Architecture, store: ObjectStore,
               outcome: TrainOutcome, save_model: bool, started_at: str, extra: dict,
               deadline: float) -> ResultRecord:
    """The succeeded record of ``outcome``, its TorchScript model stored first if asked."""
    extra.update(outcome.extra)
    if save_model:
        from kubenas.trainer.export import torchscript_bytes

        model = torchscript_bytes(outcome.model, outcome.example_input)
        _until_stored(f"{model_key(trial_id)}: model write",
                      lambda: store.put(model_key(trial_id), model), deadline)
        extra["model_key"] = model_key(trial_id)
    return ResultRecord(
        experiment=experiment, trial_id=trial_id, architecture=architecture,
        status="succeeded", reward=float(outcome.reward), metrics=outcome.metrics,
        timings=_timings(started_at, outcome.metrics), extra=extra)


def run_attempt(trial_id: str, experiment: str, architecture: Architecture, store: ObjectStore,
                train: Callable[..., Any], save_model: bool, kind: str,
                resume_state: Optional[dict] = None,
                on_epoch: Optional[Callable[[EpochMetrics], None]] = None) -> ResultRecord:
    """One attempt at a trial, the same for every kind of child.

    Resume from ``checkpoints/<trial_id>/latest.pt`` (or ``resume_state``), checkpoint after
    every epoch, turn a ``ChildFailure`` into a failed record, save the TorchScript model if
    asked, write the result create-only and drop the checkpoint. ``train(resume=, on_epoch=)``
    trains and returns an outcome with ``metrics``, ``reward``, ``extra``, ``model`` and
    ``example_input``."""
    ckey = checkpoint_key(trial_id)
    state = resume_state if resume_state is not None else \
        _load_checkpoint(store, ckey, architecture)
    attempt = _Attempt.after(state)
    extra: dict[str, Any] = {"attempt": attempt.number, "resumed_from_epoch": attempt.resumed_from}
    log.info("%s: training a %s child (attempt %d%s)", trial_id, kind, attempt.number,
             f", resuming after epoch {attempt.resumed_from}" if attempt.resumed_from else "")
    try:
        outcome = train(resume=state, on_epoch=_checkpointer(store, trial_id, architecture,
                                                             attempt, on_epoch))
    except ChildFailure as exc:
        deadline = time.monotonic() + write_retry_seconds()
        log.warning("%s: failed: %s", trial_id, exc)
        if not exc.metrics and state:
            exc.metrics = [EpochMetrics(**m) for m in state["metrics"]]
        record = _failed(experiment, trial_id, architecture, exc, attempt.started_at, extra)
    else:
        deadline = time.monotonic() + write_retry_seconds()
        record = _succeeded(experiment, trial_id, architecture, store, outcome, save_model,
                            attempt.started_at, extra, deadline)
    cost = measure_cost(attempt.earlier_seconds)
    record = _publish(store, dataclasses.replace(record, cost=cost), deadline)
    try:
        store.delete(ckey)
    except StorageError as exc:  # the result is safe; a stale checkpoint is only litter
        log.warning("%s: checkpoint not deleted: %s", trial_id, exc)
    return record


def _train_cnn_child(trial_id: str, experiment: str, architecture: Architecture,
                     config: TrainerConfig, store: ObjectStore, cache_dir) -> ResultRecord:
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    return run_attempt(
        trial_id, experiment, architecture, store,
        lambda resume, on_epoch: train_cnn(architecture, config, resume=resume,
                                           on_epoch=on_epoch, cache_dir=cache_dir, store=store),
        save_model=config.save_model, kind="cnn")


__all__ = ["checkpoint_key", "model_key", "run_attempt", "train_child", "train_cnn"]

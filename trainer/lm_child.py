"""The recurrent child (§4.2): a word-level language model on Penn Treebank built around a
searched cell (``builders.language_model``), trained with truncated BPTT (``lm_train``);
reward = c / (validation perplexity)² (``reward.reward_from_perplexity``).

Reward: ``rewardC / best_val_ppl**2`` (paper: c = 80), from the lowest validation perplexity
of any epoch; the returned model carries that epoch's weights. The test split is read only
by :func:`evaluate_test`, never during the search. Settings: ``kubenas.trainer.lm_config``.

Entry points:

    train_language_model(trial_id, experiment, architecture, trainer_config, store,
                         cache_dir=None, on_epoch=None, resume_state=None) -> ResultRecord
        what ``kubenas.trainer.child.train_child`` hands rnn_cell trials to; the same storage
        contract as the CNN child (idempotent result, per-epoch checkpoint, resume);
    train_lm(architecture, config, *, resume, on_epoch, cache_dir, store) -> TrainOutcome
        the training alone (no storage), e.g. for benchmarks;
    evaluate_test(model, trainer_config) -> dict
        the final test-set evaluation of a chosen model.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Callable, Optional

import torch

from kubenas.contracts import Architecture, EpochMetrics, result_key
from kubenas.trainer import child
from kubenas.trainer.builders.language_model import build_language_model
from kubenas.trainer.data.ptb import load_ptb
from kubenas.trainer.lm_config import lm_config
from kubenas.trainer.lm_train import evaluate, fit
from kubenas.trainer.reward import reward_from_perplexity
from kubenas.trainer.train import TrainOutcome, resolve_device

log = logging.getLogger("kubenas.trainer")


def train_lm(architecture, config, *, resume: Optional[dict] = None,
             on_epoch: Optional[Callable[[dict], None]] = None, cache_dir=None, store=None,
             merge_validation: bool = False, after_fit: Optional[Callable[..., dict]] = None):
    """Build and train one language model; return a ``TrainOutcome`` (no storage side effects).

    ``config``: an :class:`LMConfig`, the trainer mapping, or a ``TrainerConfig`` (see
    :func:`lm_config`). The outcome's reward is ``rewardC / best_val_ppl**2`` and its model
    holds the best-validation weights (eval mode). Raises ``ChildFailure`` subclasses.
    ``merge_validation`` (the final run's trainOn: train+validation): the training stream is
    the train split then the validation split, and the model keeps its last epoch's weights
    (the validation split no longer tells anything). ``after_fit(model, example)``: more
    ``extra`` for the record (the final run's test evaluation and exports)."""
    if not isinstance(architecture, Architecture):
        architecture = Architecture.from_dict(architecture)
    cfg = lm_config(config)
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    device = resolve_device(cfg.device)
    corpus = load_ptb(cfg.dataset_path, store=store, cache_dir=cache_dir)
    if merge_validation:
        corpus = dataclasses.replace(corpus, train=torch.cat([corpus.train, corpus.valid]))
    torch.manual_seed(cfg.seed)
    model = build_language_model(architecture, corpus.vocab_size, cfg).to(device)
    params = model.num_parameters()
    log.info("rnn_cell child: %s parameters on %s; %s train / %s valid tokens", f"{params:,}", device,
             corpus.train.numel(), corpus.valid.numel())
    st, best = fit(model, corpus, cfg, resume=resume, on_epoch=on_epoch)
    if best is not None and not merge_validation:
        model.load_state_dict(best)
    model.eval()
    reward = reward_from_perplexity(st.best_val_ppl, cfg.reward_c)
    extra = {"params": params, "device": str(device), "dataset": "ptb",
             "vocab_size": corpus.vocab_size, "val_perplexity": st.best_val_ppl,
             "best_epoch": st.best_epoch, "reward_c": cfg.reward_c}
    example = corpus.valid[:2 * 5].view(5, 2).to(device)
    if after_fit is not None:
        extra.update(after_fit(model, example))
    return TrainOutcome(metrics=list(st.metrics), reward=reward, extra=extra, model=model,
                        example_input=example)


def train_language_model(trial_id: str, experiment: str, architecture, trainer_config, store,
                         cache_dir=None, on_epoch: Optional[Callable[[EpochMetrics], None]] = None,
                         resume_state: Optional[dict] = None):
    """Train the rnn_cell child of trial ``trial_id`` and write (or return) its ``ResultRecord``.

    Same storage contract as the CNN child (``kubenas.trainer.child``, whose helpers it uses):
    an existing ``results/<trial_id>.json`` is returned untouched; ``checkpoints/<trial_id>/
    latest.pt`` is written after every epoch and resumed from (``resume_state``, when given,
    is used instead of the stored one); the result is written create-only and the checkpoint
    deleted. With ``saveModel`` the best-validation model goes to ``models/<trial_id>.pt`` as
    TorchScript (``m(tokens) -> logits``; ``m.run(tokens, state)`` carries the state).
    ``on_epoch(metrics)`` is called after each epoch's checkpoint. Divergence, architecture
    faults and OOM give a failed record; a bad config or a missing dataset raises."""
    existing = child._existing_result(store, result_key(trial_id))
    if existing is not None:
        log.info("%s: result already written (%s), not training", trial_id, existing.status)
        return existing
    if not isinstance(architecture, Architecture):
        architecture = Architecture.from_dict(architecture)
    cfg = lm_config(trainer_config)
    return child.run_attempt(
        trial_id, experiment, architecture, store,
        lambda resume, on_epoch: train_lm(architecture, cfg, resume=resume, on_epoch=on_epoch,
                                          cache_dir=cache_dir, store=store),
        save_model=cfg.save_model, kind="rnn_cell", resume_state=resume_state,
        on_epoch=on_epoch)


# -- the final evaluation (never during the search) --------------------------------------------------

def evaluate_test(model, trainer_config=None, *, store=None, cache_dir=None, corpus=None,
                  max_tokens: Optional[int] = None) -> dict:
    """Perplexity on the PTB *test* split: the one place the test split is read.

    ``model``: a trained :class:`LanguageModel`, or its TorchScript export (``best_model.pt``
    loaded with ``torch.jit.load``). Returns ``test_loss``, ``test_perplexity``,
    ``test_accuracy``, ``test_tokens``, and ``val_perplexity`` recomputed on the full
    validation split alongside."""
    cfg = lm_config(trainer_config)
    if corpus is None or corpus.test is None:
        corpus = load_ptb(cfg.dataset_path, store=store, cache_dir=cache_dir, include_test=True)
    vocab = int(getattr(model, "vocab_size", corpus.vocab_size))
    if vocab != corpus.vocab_size:
        raise ValueError(f"model vocabulary {vocab} != corpus vocabulary {corpus.vocab_size}")
    test = evaluate(model, corpus.test, cfg.eval_batch_size, cfg.bptt, max_tokens)
    val = evaluate(model, corpus.valid, cfg.eval_batch_size, cfg.bptt, max_tokens)
    return {"test_loss": test["loss"], "test_perplexity": test["perplexity"],
            "test_accuracy": test["accuracy"], "test_tokens": test["tokens"],
            "val_perplexity": val["perplexity"]}


__all__ = ["evaluate_test", "train_language_model", "train_lm"]

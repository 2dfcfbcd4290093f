"""What the ENAS loop trains, by space: ``ImageTask`` (``enas_macro``: the CNN supernet on an
image data set, reward = a path's accuracy on a validation minibatch) and ``LanguageTask``
(``enas_rnn``: the recurrent-cell supernet language model on Penn Treebank, reward =
``rewardC / perplexity`` on a validation window). Both give the loop (kubenas.enas.search)
the same handful of things: the supernet and its optimizer on ``device`` (the trainer
section's), ``len(train)`` steps per epoch, ``train_part`` for a run of shared-weight steps,
``reward`` of a path on a validation batch named by its position, and ``epochs``.
"""

from __future__ import annotations

from typing import Callable, Mapping

import torch

from kubenas.trainer import (Batches, TokenWindows, TrainerConfig, build_lm_supernet,
                             build_supernet, cosine_lr, LMConfig, lm_path_reward, load_dataset,
                             load_ptb, make_optimizer, path_accuracy, require_image_dataset,
                             resolve_device, train_epoch_part, train_lm_part)


class ImageTask:
    reward_name = "accuracy"

    def __init__(self, space_options: Mapping, config, store, cache_dir=None) -> None:
        cfg = config if isinstance(config, TrainerConfig) else TrainerConfig.from_dict(config)
        require_image_dataset(cfg)
        device = resolve_device(cfg.device)
        self.config, self.epochs, self.device = cfg, cfg.epochs, device
        train, val, info = load_dataset(cfg.dataset.name, cfg.dataset.path,
                                        validation_size=cfg.validation_size, seed=cfg.seed,
                                        store=store, cache_dir=cache_dir)
        self.train = Batches(train.to(device), cfg.batch_size, cfg.seed)
        self.val = Batches(val.to(device), cfg.batch_size, cfg.seed + 1)
        torch.manual_seed(cfg.seed)
        self.supernet = build_supernet(space_options, info.input_shape, info.num_classes,
                                       info.mean, info.std).to(device)
        self.optimizer = make_optimizer(self.supernet, cfg)

    def set_epoch(self, epoch: int) -> None:
        cfg = self.config
        lr = cosine_lr(cfg.learning_rate, epoch, cfg.epochs) if cfg.lr_schedule == "cosine" \
            else cfg.learning_rate
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def train_part(self, epoch: int, start: int, stop: int,
                   sample_spec: Callable[[], Mapping]) -> list[float]:
        return train_epoch_part(self.supernet, self.optimizer, self.train, epoch, start, stop,
                                sample_spec)

    def reward(self, spec: Mapping, epoch: int, index: int) -> float:
        return path_accuracy(self.supernet, spec, *self.val.batch(epoch, index))


class LanguageTask:
    reward_name = "rewardC/perplexity"

    def __init__(self, space_options: Mapping, config, store, cache_dir=None) -> None:
        cfg = LMConfig.from_dict(config)
        device = resolve_device(cfg.device)
        self.config, self.epochs, self.device = cfg, cfg.epochs, device
        corpus = load_ptb(cfg.dataset_path, store=store, cache_dir=cache_dir)
        self.train = TokenWindows(corpus.train, cfg.batch_size, cfg.bptt, cfg.max_tokens).to(device)
        self.val = TokenWindows(corpus.valid, cfg.eval_batch_size, cfg.bptt).to(device)
        torch.manual_seed(cfg.seed)
        self.supernet = build_lm_supernet(int(space_options["nodes"]), corpus.vocab_size,
                                          cfg).to(device)
        self.optimizer = torch.optim.SGD(self.supernet.parameters(), lr=cfg.learning_rate,
                                         weight_decay=cfg.weight_decay)

    def set_epoch(self, epoch: int) -> None:
        pass   # a constant rate (ENAS's shared weights on PTB: SGD, lr 20, clip 0.25)

    def train_part(self, epoch: int, start: int, stop: int,
                   sample_spec: Callable[[], Mapping]) -> list[float]:
        return train_lm_part(self.supernet, self.optimizer, self.train, epoch, start, stop,
                             sample_spec, self.config.clip_norm)

    def reward(self, spec: Mapping, epoch: int, index: int) -> float:
        return lm_path_reward(self.supernet, spec, *self.val.batch(epoch, index),
                              self.config.reward_c)


TASKS = {"enas_macro": ImageTask, "enas_rnn": LanguageTask}

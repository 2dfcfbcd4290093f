"""The alternating loop of ENAS, checkpointed through the store.

Per epoch: (1) the shared weights, one SGD step per training minibatch, each on a path
freshly sampled from the policy; (2) the policy, ``controllerSteps`` REINFORCE updates,
each rewarded with its path's score on the next validation minibatch (accuracy for
``enas_macro``, ``rewardC / perplexity`` for ``enas_rnn``: ``kubenas.enas.tasks``). At the
end, ``derive`` samples ``deriveSamples`` paths and keeps the best on ``deriveBatches``
validation batches. The first ``warmupEpochs`` epochs train the shared weights on uniformly
random paths and skip the policy phase.

The loop stops after ``trainer.epochs`` epochs or when the policy has been rewarded
``budget.maxTrials`` times. Everything the loop depends on is in the checkpoint
(``enas/checkpoint.pt``): the supernet, its optimizer, the strategy (policy, its optimizer,
baseline, generator) and the data position (epoch, phase, step, validation cursor), written
every ``checkpointEvery`` steps and at every phase boundary. Batches are a function of the
position, so a resumed run repeats exactly what the lost steps did.
"""

from __future__ import annotations

import io
import random
import time
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Callable, Mapping, Optional

import torch

from kubenas.controller import EnasStrategy
from kubenas.enas.tasks import TASKS
from kubenas.storage import NotFound, ObjectStore

CHECKPOINT_KEY = "enas/checkpoint.pt"


@dataclass
class Position:
    epoch: int = 0
    phase: str = "shared"     # "shared" | "policy"
    step: int = 0             # minibatches (shared) or policy updates (policy) done this phase
    val_batch: int = 0        # validation minibatches used for rewards so far


class EnasSearch:
    def __init__(self, strategy: EnasStrategy, config, store: ObjectStore,
                 max_samples: int, on_step: Optional[Callable[[Position], None]] = None,
                 cache_dir=None) -> None:
        """``config``: the trainer section (a mapping, or a ``TrainerConfig`` for images)."""
        self.strategy, self.store = strategy, store
        self.max_samples = max_samples
        self.on_step = on_step or (lambda pos: None)
        self.loop = strategy.loop_options()
        self.task = TASKS[strategy.space.name](strategy.space.options(), config, store, cache_dir)
        self.epochs, self.device = self.task.epochs, self.task.device
        self.supernet, self.optimizer = self.task.supernet, self.task.optimizer
        self.pos = Position()
        self.history: list[dict] = []
        self.cpu_seconds = 0.0     # this search's process CPU time, across resumes
        self._cpu_mark = time.process_time()
        self.resumed = self._load()

    # -- the loop ------------------------------------------------------------------------
    def run(self) -> dict:
        while self.pos.epoch < self.epochs and not self._budget_spent():
            if self.pos.phase == "shared":
                self._shared_phase()
            else:
                self._policy_phase()
        return self.derive()

    def _budget_spent(self) -> bool:
        return self.strategy.num_sampled >= self.max_samples

    def _shared_phase(self) -> None:
        self.task.set_epoch(self.pos.epoch)
        every, steps = self.loop["checkpointEvery"], len(self.task.train)
        while self.pos.step < steps:
            stop = min(self.pos.step + every, steps)
            losses = self.task.train_part(self.pos.epoch, self.pos.step, stop,
                                          self._path_sampler())
            self.pos.step = stop
            self._note("shared_loss", sum(losses) / len(losses), len(losses))
            self._save()
            self.on_step(self.pos)
        self.pos.phase, self.pos.step = "policy", 0
        self._save()

    def _warming_up(self) -> bool:
        return self.pos.epoch < self.loop["warmupEpochs"]

    def _path_sampler(self) -> Callable[[], Mapping]:
        """Where this part's shared-weight steps get their paths: the policy, or in warm-up
        a generator seeded by the position (a resumed part redraws the same paths)."""
        if not self._warming_up():
            return lambda: self.strategy.sample_child().spec
        rng = random.Random(f"{self.strategy.seed}/{self.pos.epoch}/{self.pos.step}")
        return lambda: self.strategy.uniform_child(rng).spec

    def _policy_phase(self) -> None:
        steps = 0 if self._warming_up() else self.loop["controllerSteps"]
        while self.pos.step < steps and not self._budget_spent():
            proposal = self.strategy.ask()
            reward = self.task.reward(proposal.architecture.spec,
                                      *divmod(self.pos.val_batch, len(self.task.val)))
            self.strategy.tell(proposal.index, reward)
            self.pos.step += 1
            self.pos.val_batch += 1
            self._note("reward", reward)
            if self.pos.step % self.loop["checkpointEvery"] == 0:
                self._save()
            self.on_step(self.pos)
        self.pos.epoch, self.pos.phase, self.pos.step = self.pos.epoch + 1, "shared", 0
        self._save()

    def _note(self, key: str, value: float, count: int = 1) -> None:
        """Per-epoch means for the summary (``value``: the mean of ``count`` steps)."""
        if not self.history or self.history[-1]["epoch"] != self.pos.epoch:
            self.history.append({"epoch": self.pos.epoch})
        row = self.history[-1]
        n = row.get(f"{key}_n", 0)
        row[key] = (row.get(key, 0.0) * n + value * count) / (n + count)
        row[f"{key}_n"] = n + count

    # -- the derived architecture ----------------------------------------------------------
    def derive(self) -> dict:
        """Sample ``deriveSamples`` paths; keep the best by its mean reward on the first
        ``deriveBatches`` validation batches (the same for every candidate, so they are
        compared on equal terms)."""
        batches = min(self.loop["deriveBatches"], len(self.task.val))
        candidates = []
        for _ in range(self.loop["deriveSamples"]):
            arch = self.strategy.sample_child()
            score = sum(self.task.reward(arch.spec, self.epochs, i) for i in range(batches))
            candidates.append((score / batches, arch))
        best_reward, best = max(candidates, key=lambda c: c[0])
        self._tick()
        return {"architecture": best.to_dict(), "val_batch_reward": best_reward,
                "reward_name": self.task.reward_name, "derive_batches": batches,
                "op_histogram": op_histogram(best.spec),
                "candidates": [{"val_batch_reward": r, "tokens": c.tokens} for r, c in candidates],
                "epochs": self.pos.epoch, "policy_samples": self.strategy.num_sampled,
                "policy_version": self.strategy.version, "history": self.history,
                "cpu_seconds": round(self.cpu_seconds, 1), "device": str(self.device)}

    # -- checkpoint ------------------------------------------------------------------------
    def _tick(self) -> None:
        now = time.process_time()
        self.cpu_seconds += now - self._cpu_mark
        self._cpu_mark = now

    def _save(self) -> None:
        self._tick()
        buf = io.BytesIO()
        torch.save({"supernet": self.supernet.state_dict(), "optimizer": self.optimizer.state_dict(),
                    "strategy": self.strategy.state_dict(), "position": asdict(self.pos),
                    "history": self.history, "cpu_seconds": self.cpu_seconds}, buf)
        self.store.put(CHECKPOINT_KEY, buf.getvalue())

    def _load(self) -> bool:
        try:
            data = self.store.get(CHECKPOINT_KEY)
        except NotFound:
            return False
        state = torch.load(io.BytesIO(data), map_location=self.device, weights_only=True)
        self.supernet.load_state_dict(state["supernet"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.strategy.load_state_dict(state["strategy"])
        self.pos = Position(**state["position"])
        self.history = list(state["history"])
        self.cpu_seconds = float(state["cpu_seconds"])
        return True


def op_histogram(spec: Mapping) -> dict:
    """How often each op appears in an architecture, and how many skips it has: the
    collapse check (ENAS on some spaces ends with every layer parameter-free). A recurrent
    cell: its activations, and how many loose ends are averaged into h_t."""
    if "nodes" in spec:
        read = {n.get("input") for n in spec["nodes"]}
        return {"activations": dict(sorted(Counter(n["activation"] for n in spec["nodes"]).items())),
                "loose_ends": sum(n["name"] not in read for n in spec["nodes"])}
    ops = Counter(layer["op"] for layer in spec["layers"])
    return {"ops": dict(sorted(ops.items())),
            "skips": sum(len(layer.get("skips", [])) for layer in spec["layers"])}

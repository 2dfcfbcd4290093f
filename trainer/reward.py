"""The reward of a trained child: for an image classifier (§4.1) the best validation accuracy
of the last ``window`` epochs, raised to ``exponent`` (paper: last 5 epochs, cubed); for a
language model (§4.2) ``c / (validation perplexity)²`` (paper: c = 80)."""

from __future__ import annotations

from typing import Iterable


def compute_reward(val_accs: Iterable[float], window: int = 5, exponent: float = 3.0) -> float:
    """``max(val_accs[-window:]) ** exponent``; accuracies are fractions in [0, 1]."""
    accs = [float(a) for a in val_accs]
    if not accs:
        raise ValueError("compute_reward: no validation accuracies (no epoch completed)")
    if window < 1:
        raise ValueError(f"compute_reward: window must be >= 1, got {window}")
    return max(accs[-window:]) ** exponent


def reward_from_perplexity(val_ppl: float, c: float = 80.0) -> float:
    """§4.2: c / (validation perplexity)²."""
    return float(c) / float(val_ppl) ** 2

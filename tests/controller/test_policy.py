"""The LSTM controller: sizes, initialisation, and that log P is a proper distribution."""

import math
from collections import Counter

import pytest
import torch

from kubenas.controller.policy import LSTMPolicy
from kubenas.controller.spaces.cnn import CnnSpace


def test_paper_sizes_and_init_range():
    space = CnnSpace()
    policy = LSTMPolicy(space.categorical_keys())
    assert len(policy.lstm) == 2
    for cell in policy.lstm:
        assert (cell.input_size, cell.hidden_size) == (35, 35)
    assert {k: c.out_features for k, c in policy.classifiers.items()} == space.categorical_keys()
    values = torch.cat([p.detach().flatten() for p in policy.parameters()])
    assert values.abs().max() <= 0.08
    # drawn over the whole range, not e.g. left at zero or at torch's default (1/sqrt(35))
    assert values.max() > 0.079 and values.min() < -0.079
    assert abs(float(values.mean())) < 0.002
    assert math.isclose(float(values.std()), 0.16 / math.sqrt(12), rel_tol=0.03)


def test_sizes_are_configurable():
    policy = LSTMPolicy({"a": 3}, hidden_size=8, num_layers=3, init_range=0.5, seed=1)
    assert len(policy.lstm) == 3 and policy.lstm[0].hidden_size == 8
    values = torch.cat([p.detach().flatten() for p in policy.parameters()])
    assert values.abs().max() <= 0.5 and values.abs().max() > 0.45


def test_same_seed_same_weights_other_seed_other_weights():
    keys = CnnSpace().categorical_keys()
    a, b, c = LSTMPolicy(keys, seed=3), LSTMPolicy(keys, seed=3), LSTMPolicy(keys, seed=4)
    for (pa, pb, pc) in zip(a.parameters(), b.parameters(), c.parameters()):
        assert torch.equal(pa, pb)
        assert not torch.equal(pa, pc)


def test_probabilities_of_every_architecture_sum_to_one(h):
    # Covers categorical softmaxes and the anchor sigmoids together: if a bit's probability
    # were missing from log P (or counted twice) the total would not be 1.
    space = h.tiny_cnn(depth=3)
    plan = space.plan(0)
    policy = LSTMPolicy(space.categorical_keys(), init_range=1.0, seed=0)  # far from uniform
    with torch.no_grad():
        total = sum(math.exp(float(policy.log_prob(plan, a)[0])) for a in h.all_actions(plan))
    assert total == pytest.approx(1.0, abs=1e-5)


def test_anchor_sigmoids_are_part_of_log_p(h):
    space = h.tiny_cnn(depth=3)
    plan = space.plan(0)
    policy = LSTMPolicy(space.categorical_keys(), init_range=1.0, seed=0)
    base = [(), 0, 0, (0,), 0, 0, (0, 0), 0, 0]
    flipped = [(), 0, 0, (0,), 0, 0, (1, 0), 0, 0]
    lp0, _ = policy.log_prob(plan, base)
    lp1, _ = policy.log_prob(plan, flipped)
    assert float(lp0.detach()) != pytest.approx(float(lp1.detach()), abs=1e-4)
    # ... and the attention parameters get gradient through them
    lp0.backward()
    for p in (policy.v.weight, policy.w_prev.weight, policy.w_curr.weight):
        assert p.grad is not None and p.grad.abs().sum() > 0


def test_anchor_choice_feeds_the_next_step(h):
    # Which layers were selected must change what the controller predicts next.
    space = h.tiny_cnn(depth=3)
    plan = space.plan(0)
    policy = LSTMPolicy(space.categorical_keys(), init_range=1.0, seed=0)
    prefix = [(), 0, 0, (0,), 0, 0]
    lp = []
    for bits in [(0, 0), (1, 0), (0, 1), (1, 1)]:
        with_bits = policy.log_prob(plan, prefix + [bits, 0, 0])[0]
        without_next = policy.log_prob(plan[:7], prefix + [bits])[0]
        lp.append(float((with_bits - without_next).detach()))  # log P(next two tokens | bits)
    assert len({round(x, 5) for x in lp}) == 4


def test_sample_matches_log_prob_and_is_deterministic():
    space = CnnSpace({"strides": [1, 2]})
    plan = space.plan(0)
    policy = LSTMPolicy(space.categorical_keys(), seed=0)
    with torch.no_grad():
        a1, lp1, ent1 = policy.sample(plan, torch.Generator().manual_seed(7))
        a2, lp2, _ = policy.sample(plan, torch.Generator().manual_seed(7))
        a3, _, _ = policy.sample(plan, torch.Generator().manual_seed(8))
        lp_again, ent_again = policy.log_prob(plan, a1)
    assert a1 == a2 and float(lp1) == float(lp2)
    assert a1 != a3
    assert float(lp1) == pytest.approx(float(lp_again), abs=1e-6)
    assert float(ent1) == pytest.approx(float(ent_again), abs=1e-6)
    assert [len(a) for a, d in zip(a1, plan) if d.kind == "anchor"] == list(range(6))


def test_samples_follow_the_distribution_log_prob_describes(h):
    space = h.tiny_cnn(depth=2)
    plan = space.plan(0)
    policy = LSTMPolicy(space.categorical_keys(), init_range=1.0, seed=2)
    gen = torch.Generator().manual_seed(0)
    n = 4000
    with torch.no_grad():
        counts = Counter(tuple(policy.sample(plan, gen)[0]) for _ in range(n))
        probs = {tuple(a): math.exp(float(policy.log_prob(plan, a)[0])) for a in h.all_actions(plan)}
    chi2 = sum((counts.get(a, 0) - n * p) ** 2 / (n * p) for a, p in probs.items())
    dof = len(probs) - 1  # 31
    assert chi2 < dof + 5 * math.sqrt(2 * dof)  # ~5 sigma of a chi-square(31)


def test_wrong_actions_are_rejected(h):
    space = h.tiny_cnn(depth=2)
    plan = space.plan(0)
    policy = LSTMPolicy(space.categorical_keys())
    with pytest.raises(ValueError):
        policy.log_prob(plan, [(), 0, 0, (0, 1), 0, 0])  # two bits for one earlier layer
    with pytest.raises(ValueError):
        policy.log_prob(plan, [(), 5, 0, (0,), 0, 0])    # choice out of range

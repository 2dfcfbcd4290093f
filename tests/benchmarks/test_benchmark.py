"""The table benchmark's yardstick on a constructed table: unseen-seed scoring, pairing by
run seed, and the re-evaluation pick rule (no table download, no torch)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("scipy")

from benchmarks.nasbench201 import benchmark as bm  # noqa: E402
from benchmarks.nasbench201.simulated import TableExecutor  # noqa: E402
from benchmarks.nasbench201.table import NUM_CELLS, NB201Table  # noqa: E402
from kubenas.contracts import TrialRequest  # noqa: E402
from kubenas.controller.spaces.nasbench201 import from_table_index  # noqa: E402


LUCKY, STEADY, TWO_SEEDS = 7, 11, 13      # cell indices given special accuracies below


def tiny_table() -> NB201Table:
    """Every cell 50 % on 3 seeds, except: LUCKY wins one seed by luck (95, 70, 70), STEADY is
    truly better (90, 89, 91), TWO_SEEDS has only two seeds (80, 84)."""
    val = np.full((NUM_CELLS, 3), 50.0)
    n_seeds = np.full(NUM_CELLS, 3)
    val[LUCKY] = [95.0, 70.0, 70.0]
    val[STEADY] = [90.0, 89.0, 91.0]
    val[TWO_SEEDS] = [80.0, 84.0, np.nan]
    n_seeds[TWO_SEEDS] = 2
    return NB201Table(dataset="tiny", val_acc=val, train_time=np.full((NUM_CELLS, 3), 10.0),
                      n_seeds=n_seeds, model_size=np.zeros(NUM_CELLS), latency=np.zeros(NUM_CELLS),
                      mean_val_acc=np.nanmean(val, axis=1))


# -- unseen-seed scoring -----------------------------------------------------------------------

def test_the_lucky_seed_does_not_score_its_own_pick():
    tracker = bm.PickTracker(tiny_table())
    tracker.observe(STEADY, 0, 0.90)
    tracker.observe(LUCKY, 0, 0.95)                 # the lucky draw wins the pick ...
    assert tracker.pick() == LUCKY
    assert tracker.score(LUCKY) == (70.0, False)    # ... and is scored on seeds 1 and 2 only
    assert tracker.score(STEADY) == (90.0, False)   # (89 + 91) / 2


def test_all_seeds_seen_falls_back_to_the_mean_and_says_so():
    tracker = bm.PickTracker(tiny_table())
    tracker.observe(TWO_SEEDS, 1, 0.84)
    assert tracker.score(TWO_SEEDS) == (80.0, False)
    tracker.observe(TWO_SEEDS, 0, 0.80)
    assert tracker.score(TWO_SEEDS) == (82.0, True)
    assert tracker.score(-1)[1] is False            # nothing picked yet: no fallback counted


def _run(strategy, seed, final, fallback=False, worst=0.0):
    return bm.RunResult(strategy=strategy, seed=seed, quality=[final], best_index=0,
                        best_reward=0.0, unique=1, sim_seconds=0.0, compute_seconds=0.0,
                        wall_seconds=0.0, fallback=[fallback], worst_seed=worst,
                        mean_all_seeds=final + 0.5)


def test_summary_counts_fallbacks_and_bounds_them_by_the_worst_seed():
    runs = {"random": [_run("random", s, 90.0) for s in range(4)],
            "evolution": [_run("evolution", s, 91.0, fallback=s < 3, worst=89.0) for s in range(4)]}
    summary = bm.summarise(runs, optimum=92.0, trials=1)
    evo = summary["evolution"]["1"]
    assert evo["fallbacks"] == 3 and summary["random"]["1"]["fallbacks"] == 0
    assert evo["regret_mean"] == pytest.approx(1.0)
    assert evo["regret_worst_fallback"] == pytest.approx(92.0 - (3 * 89.0 + 91.0) / 4)
    assert evo["mean_all_seeds"] == pytest.approx(91.5)


# -- pairing by run seed -----------------------------------------------------------------------

def test_p_values_pair_runs_by_seed_not_by_position():
    rng = np.random.default_rng(0)
    base = {s: float(v) for s, v in enumerate(90 + rng.normal(0, 1, 10))}
    better = {s: base[s] + 0.05 + 0.01 * s for s in base}          # better on every seed
    runs = {"random": [_run("random", s, base[s]) for s in base],
            "reinforce": [_run("reinforce", s, better[s]) for s in reversed(list(base))]}
    runs["reinforce"].append(_run("reinforce", 99, 0.0))           # no partner: not paired
    summary = bm.summarise(runs, optimum=95.0, trials=1)
    p = summary["reinforce"]["1"]["p_vs_random"]
    assert p == pytest.approx(2 / 2 ** 10)          # exact two-sided: all 10 differences > 0
    assert summary["reinforce"]["1"]["diff_vs_random"] == pytest.approx(0.095)
    assert summary["random"]["1"]["p_paired"]["reinforce"] == pytest.approx(p)
    # paired by list position instead, the same numbers say nothing
    from scipy.stats import wilcoxon
    by_position = wilcoxon([r.quality[0] for r in runs["reinforce"][:10]], list(base.values()))
    assert by_position.pvalue > 0.05


def test_paired_drops_unshared_seeds_and_identical_runs_give_one():
    seeds, a, b = bm.paired({3: 1.0, 1: 2.0, 7: 5.0}, {1: 2.5, 3: 0.5, 4: 9.0})
    assert seeds == [1, 3] and a.tolist() == [2.0, 1.0] and b.tolist() == [2.5, 0.5]
    assert bm.paired_p(np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 3.0])) == 1.0
    assert bm.paired_p(np.array([1.0]), np.array([2.0])) is None


# -- the re-evaluation pick rule ---------------------------------------------------------------

def _search(executor, tracker, cells):
    """A search phase that sees seed 0 of each cell (the lucky one for LUCKY)."""
    executor.draw_seed = lambda index, fresh=False: 0
    for i, cell in enumerate(cells):
        tid = f"t-{i}"
        executor.submit(TrialRequest(trial_id=tid, architecture=from_table_index(cell)))
        (record,) = executor.poll(set())
        executor.poll({tid})
        tracker.observe(cell, executor.table_seeds[tid], record.reward)
    del executor.draw_seed                          # back to the executor's own draw


def test_a_second_seed_that_disagrees_changes_the_pick_and_costs_trials():
    table = tiny_table()
    executor = TableExecutor(table, workers=1, seed=0, reward_exponent=1.0)
    tracker = bm.PickTracker(table)
    _search(executor, tracker, [LUCKY, STEADY, 20])
    assert tracker.pick() == LUCKY
    scores = []

    def on_result(tid, reward):
        tracker.observe(executor.table_index(tid), executor.table_seeds[tid], reward)
        scores.append(tracker.score(tracker.pick())[0])

    spent = bm.reevaluate(executor, tracker, count=2, top_k=None, on_result=on_result)
    assert spent == 2 and len(scores) == 2          # two more trials of the budget
    assert len(executor.table_indices) == 5 and executor.busy_seconds == 50.0
    assert tracker.candidates == [LUCKY, STEADY]
    assert tracker.pick() == STEADY                 # LUCKY's second seed (70) disagreed
    assert tracker.pick_reward() in (pytest.approx(0.895), pytest.approx(0.905))   # 90 and 89|91
    for cell in (LUCKY, STEADY):                    # a seed the search had not drawn
        assert executor.drawn_seeds(cell) - {0}


def test_reevaluation_round_robin_and_fresh_seeds_until_none_is_left():
    table = tiny_table()
    executor = TableExecutor(table, workers=2, seed=1, reward_exponent=1.0)
    tracker = bm.PickTracker(table)
    _search(executor, tracker, [TWO_SEEDS, STEADY])
    seen = []
    bm.reevaluate(executor, tracker, count=5, top_k=2, on_result=lambda tid, r: seen.append(
        (executor.table_index(tid), executor.table_seeds[tid])))
    assert len(seen) == 5
    by_cell = {c: [s for i, s in seen if i == c] for c in (TWO_SEEDS, STEADY)}
    assert len(by_cell[STEADY]) == 3 and len(by_cell[TWO_SEEDS]) == 2   # round robin
    assert sorted(by_cell[STEADY][:2]) == [1, 2]     # fresh seeds first ...
    assert by_cell[TWO_SEEDS][0] == 1                # ... the only one left
    assert executor.drawn_seeds(TWO_SEEDS) == {0, 1}


def test_budget_split_and_bad_shares():
    assert bm.split_budget(150, 0.0) == (150, 0)
    assert bm.split_budget(150, 0.1) == (135, 15)
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError):
            bm.split_budget(150, bad)
    with pytest.raises(ValueError):
        bm.split_budget(1, 0.9)
    with pytest.raises(ValueError):
        bm.pick_rule("nasbench201", "random", 0.1, 0)


def test_pick_rule_defaults_come_from_the_space_and_yield_to_the_caller():
    from benchmarks.nasbench201.config import PICK_DEFAULTS

    for strategy in ("reinforce", "random", "evolution"):
        rule = bm.pick_rule("nasbench201", strategy)
        assert rule["reevalShare"] == PICK_DEFAULTS.get(strategy, {}).get("reevalShare", 0.0)
        assert bm.pick_rule("nasbench201", strategy, 0.0, 3) == {"reevalShare": 0.0, "reevalTopK": 3}


def test_kubenas_benchmark_runs_the_benchmark_from_the_checkout(capsys):
    from kubenas import cli

    assert cli.main(["benchmark", "--out", "/nonexistent-never-written",
                     "--strategy-options", "{bad"]) == 2
    assert "kubenas benchmark: --strategy-options is not valid JSON" in capsys.readouterr().err

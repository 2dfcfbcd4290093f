"""1,000 mutated experiment files through what `kubenas run` checks (``kubenas.cli.check_run``
and ``kubenas run --dry-run``): each one is accepted and runnable (its strategy samples), or
refused with a ContractError whose message names a field of the document. Never another
exception, never a traceback. Deterministic (seed 11); the counts are printed."""

from __future__ import annotations

import collections
import copy
import math
import random
import re
from pathlib import Path

import pytest
import yaml

from kubenas import cli
from kubenas.contracts import ContractError
from kubenas.controller import strategy_factory

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = {p.stem: yaml.safe_load(p.read_text()) for p in sorted((REPO / "examples").glob("*.yaml"))}
CASES = 1000
SEED = 11

WRONG_TYPES = ["x", "", 7, -3, 2.5, True, False, None, [], {}, [1, "a"], {"k": 1}, "２"]
OUT_OF_RANGE = [0, -1, -(2**31), 10**12, 2**63, 1e308, -1e308, float("nan"), float("inf"),
                float("-inf"), 1_000_001, 10_001, 17, 2**32]
UNICODE = ["ｃｎｎ", "名前", "💥", "\u202eevil", "é", "Ωmega", "ä-b", "null\u0000byte", "\ufeffbom"]
IN_RANGE = [1, 2, 3, 8, 0.5, 0.01]


def _paths(node, here=()):
    """Every (path, value) below ``node``; a path is a tuple of keys and indices."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        yield here + (key,), value
        if not (isinstance(value, list) and len(value) > 50):
            yield from _paths(value, here + (key,))


def _parent(doc, path):
    node = doc
    for key in path[:-1]:
        node = node[key]
    return node


def _mutate(doc: dict, rng: random.Random) -> str:
    """One mutation of ``doc`` in place; returns its kind."""
    paths = list(_paths(doc))
    kind = rng.choice(["wrong_type", "missing", "unknown", "out_of_range", "huge_list",
                       "unicode", "deep", "in_range"])
    if kind == "unknown":
        maps = [()] + [p for p, v in paths if isinstance(v, dict)]
        target = doc if not (where := rng.choice(maps)) else _parent(doc, where)[where[-1]]
        known = list(target) or ["x"]
        typo = rng.choice(known) + rng.choice(["s", "x", ""]) + rng.choice(["", "é", "_"])
        target[rng.choice([typo, rng.choice(UNICODE), "bogus"])] = rng.choice(WRONG_TYPES)
        return kind
    if kind == "missing":
        keyed = [p for p, _ in paths if isinstance(_parent(doc, p), dict)]
        path = rng.choice(keyed)
        del _parent(doc, path)[path[-1]]
        return kind
    numbers = [p for p, v in paths if isinstance(v, (int, float)) and not isinstance(v, bool)]
    strings = [p for p, v in paths if isinstance(v, str)]
    if kind in ("out_of_range", "in_range") and numbers:
        path = rng.choice(numbers)
        _parent(doc, path)[path[-1]] = rng.choice(OUT_OF_RANGE if kind == "out_of_range" else IN_RANGE)
        return kind
    if kind == "unicode" and strings:
        path = rng.choice(strings)
        _parent(doc, path)[path[-1]] = rng.choice(UNICODE)
        return kind
    path = rng.choice([p for p, _ in paths])
    if kind == "huge_list":
        value = [rng.choice([1, 3, "x"]) for _ in range(rng.choice([100, 1000, 3000]))]
    elif kind == "deep":
        value = leaf = {}
        for _ in range(rng.randint(20, 90)):
            leaf["a"] = {} if rng.random() < 0.8 else [{}]
            leaf = leaf["a"] if isinstance(leaf["a"], dict) else leaf["a"][0]
    else:
        kind, value = "wrong_type", rng.choice(WRONG_TYPES)
    _parent(doc, path)[path[-1]] = value
    return kind


def _names_a_field(doc: dict, message: str) -> bool:
    """The message starts with the dotted path of a field of ``doc`` (the last step may be
    missing: "is required"; keys may hold dots, like label keys)."""
    steps = re.findall(r"\[(\d+)\]|([^.\[\]]+)", message.split(": ", 1)[0])
    node, i = doc, 0
    while i < len(steps):
        index, key = steps[i]
        if index:
            if not isinstance(node, list) or int(index) >= len(node):
                return False
            node, i = node[int(index)], i + 1
            continue
        if not isinstance(node, dict):
            return False
        for j in range(len(steps), i, -1):  # the longest dotted run that is one key
            run = [k for idx, k in steps[i:j] if not idx]
            if len(run) == j - i and ".".join(run) in node:
                node, i = node[".".join(run)], j
                break
        else:
            return i == len(steps) - 1  # a missing last step: "is required"
    return bool(steps)


def _run_one(doc: dict, path: Path, capsys) -> str:
    """`kubenas run FILE --dry-run`: exit 0, or exit 2 with the field named; then, for an
    accepted file, the strategy ``check_run`` builds must sample."""
    path.write_text(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False))
    capsys.readouterr()
    rc = cli.main(["run", str(path), "--dry-run"])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    if rc == 0:
        _, factory, _ = cli.check_run(path)
        factory().ask()
        return "accepted"
    assert rc == 2, f"exit {rc}: {err[-2000:]}"
    prefix = f"kubenas: error: {path}: "
    assert err.startswith(prefix), err[:300]
    assert _names_a_field(doc, err[len(prefix):]), f"names no field: {err[:300]}"
    return _reason(err)


# What a refusal says, by the first phrase that matches.
REASONS = [("unknown key", "unknown "), ("required", "is required"), ("too deep", "nested deeper"),
           ("too long", "at most"), ("above a bound", "<= "), ("not a choice", "must be one of"),
           ("not a mapping", "must be a mapping"), ("not a list", "must be a list")]


def _reason(message: str) -> str:
    for name, phrase in REASONS:
        if phrase in message:
            return f"rejected: {name}"
    return "rejected: wrong type or value"


def test_a_thousand_mutated_specs_are_accepted_and_runnable_or_refused_naming_the_field(
        tmp_path, capsys):
    rng = random.Random(SEED)
    counts: dict = collections.defaultdict(collections.Counter)
    for i in range(CASES):
        name = rng.choice(sorted(EXAMPLES))
        doc = copy.deepcopy(EXAMPLES[name])
        kinds = [_mutate(doc, rng) for _ in range(rng.choice([1, 1, 1, 2, 3]))]
        try:
            verdict = _run_one(doc, tmp_path / f"case-{i:04d}.yaml", capsys)
        except Exception as exc:  # noqa: BLE001 - any other exception is the failure we look for
            raise AssertionError(f"case {i} ({name}, {kinds}): {type(exc).__name__}: {exc}") from exc
        outcome = "accepted" if verdict == "accepted" else "rejected"
        counts[kinds[0] if len(kinds) == 1 else "2-3 mutations"][outcome] += 1
        counts["(all)"][outcome] += 1
        counts["(all)"][verdict] += verdict != "accepted"
    reasons = {k: v for k, v in counts["(all)"].items() if k.startswith("rejected: ")}
    with capsys.disabled():
        print(f"\nspec fuzz, {CASES} mutated files (seed {SEED}) through kubenas run --dry-run:")
        for kind in sorted(counts, key=lambda k: (k == "(all)", k)):
            c = counts[kind]
            print(f"  {kind:16s} accepted {c['accepted']:4d}  rejected {c['rejected']:4d}")
        print("  " + ", ".join(f"{k[10:]} {v}" for k, v in sorted(reasons.items())))
    assert counts["(all)"]["accepted"] + counts["(all)"]["rejected"] == CASES
    assert sum(reasons.values()) == counts["(all)"]["rejected"]
    assert counts["(all)"]["accepted"] > 0 and counts["(all)"]["rejected"] > 0


def test_floats_that_are_not_numbers_are_refused_by_name():
    doc = copy.deepcopy(EXAMPLES["quickstart"])
    doc["spec"]["search"]["strategyOptions"]["learningRate"] = math.nan
    with pytest.raises(ContractError, match=r"^spec\.search\.strategyOptions\.learningRate: "):
        strategy_factory(cli_parse(doc))


def cli_parse(doc):
    from kubenas.experiment import parse_experiment
    return parse_experiment(doc)

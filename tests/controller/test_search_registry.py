"""make_space / make_strategy: names, option errors that name the field, import hygiene."""

import subprocess
import sys

import pytest

from kubenas.contracts import ContractError
from kubenas.controller.spaces import SPACES, make_space
from kubenas.controller.strategies import make_strategy


def test_registries():
    assert {"cnn", "rnn_cell"} <= set(SPACES)
    space = make_space("cnn", {})
    for name in ("reinforce", "random", "evolution"):
        assert make_strategy(name, space, {}, seed=0).name == name
    with pytest.raises(ContractError, match="search.space: unknown space 'mlp'"):
        make_space("mlp", {})
    with pytest.raises(ContractError, match="search.strategy: unknown strategy 'ppo'"):
        make_strategy("ppo", space, {}, 0)


def test_unknown_strategy_option_names_the_key_and_lists_the_known_ones():
    with pytest.raises(ContractError) as err:
        make_strategy("reinforce", make_space("cnn"), {"lerningRate": 0.1}, 0)
    assert str(err.value) == ("spec.search.strategyOptions.lerningRate: unknown option "
                              "(did you mean 'learningRate'?)")
    with pytest.raises(ContractError) as err:
        make_strategy("reinforce", make_space("cnn"), {"zzz": 0.1}, 0)
    msg = str(err.value)
    assert msg.startswith("spec.search.strategyOptions.zzz: unknown option (known: ")
    assert "learningRate" in msg and "baselineDecay" in msg
    with pytest.raises(ContractError, match=r"^spec\.search\.strategyOptions\.sampleSize: unknown"):
        make_strategy("random", make_space("cnn"), {"sampleSize": 3}, 0,
                      where="spec.search.strategyOptions")


@pytest.mark.parametrize("name, opts, where", [
    ("reinforce", {"learningRate": "fast"}, "learningRate: must be a number"),
    ("reinforce", {"learningRate": 0}, "learningRate: must be a number in \\(0, 10\\]"),
    ("reinforce", {"batchSize": 2.5}, "batchSize: must be an integer"),
    ("reinforce", {"baselineDecay": 1.5}, "baselineDecay: must be a number in"),
    ("reinforce", {"optimizer": "rmsprop"}, "optimizer: must be one of"),
    ("reinforce", {"rewardShaping": "log"}, "rewardShaping: must be one of"),
    ("evolution", {"populationSize": 5, "sampleSize": 6}, "sampleSize: must be <="),
])
def test_bad_strategy_options(name, opts, where):
    with pytest.raises(ContractError, match=f"search.strategyOptions.{where}"):
        make_strategy(name, make_space("cnn"), opts, 0)


def _imported_after(code: str) -> set:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys; print(' '.join(sys.modules))"],
                         capture_output=True, text=True, check=True).stdout
    return {m.split(".")[0] for m in out.split()}


def test_controller_never_imports_kubernetes_or_boto3():
    mods = _imported_after("import kubenas.controller.policy, kubenas.controller.strategies.reinforce, "
                           "kubenas.controller.strategies.evolution, kubenas.controller.spaces")
    assert "kubernetes" not in mods and "boto3" not in mods


def test_spaces_and_torch_free_strategies_do_not_import_torch():
    mods = _imported_after(
        "from kubenas.controller.spaces import make_space\n"
        "from kubenas.controller.strategies import make_strategy\n"
        "s = make_strategy('evolution', make_space('rnn_cell'), {}, 0); s.tell(s.ask().index, 1.0)\n"
        "make_strategy('random', make_space('cnn'), {}, 0).ask()")
    assert "torch" not in mods

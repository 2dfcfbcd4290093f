"""The names an experiment may use for its search space, strategy and data set: the one
definition the spec parser (``kubenas.experiment``), the architecture contract, the CRD enums
and the registries (``kubenas.controller.spaces.SPACES``,
``kubenas.controller.strategies.STRATEGIES``, ``kubenas.trainer.config.DATASETS``) are tested
against (tests/kubenas/test_crd_agrees.py). Stdlib only, so the operator can read it without torch.
"""

SPACES = ("cnn", "rnn_cell", "nasbench201", "enas_macro", "enas_rnn")
# enas: one process trains a shared-weight supernet and the policy in turn (kubenas.enas),
# not one child per trial.
STRATEGIES = ("reinforce", "random", "evolution", "enas")
# Strategies that train in one process instead of one child per trial: in a cluster their
# controller pod is the search, placed on a worker pool with its GPUs (the operator's
# controller_deployment), not a scheduler of Trials.
IN_PROCESS_STRATEGIES = ("enas",)
# Spaces with a shared-weight supernet, the ones ``enas`` searches (kubenas.enas.tasks.TASKS
# holds what each trains; tests/kubenas/test_crd_agrees.py holds the two equal).
SUPERNET_SPACES = ("enas_macro", "enas_rnn")
DATASETS = ("digits", "fashion_mnist", "cifar10", "ptb")
# Spaces whose children the final phase (spec.final) can grid-search, retrain and test
# (enas_macro, enas_rnn: an ``enas`` search's derived architecture, as a standalone network).
FINAL_SPACES = ("cnn", "rnn_cell", "enas_macro", "enas_rnn")
# Spaces whose children are language models on Penn Treebank (kubenas.trainer.lm_child):
# the paper's tree cell and ENAS's recurrent cell (an ``enas`` search's derived cell).
LM_SPACES = ("rnn_cell", "enas_rnn")

# What an experiment gets when ``spec.search`` names none (the CRD's ``default:`` too).
DEFAULT_SPACE = "cnn"
DEFAULT_STRATEGY = "reinforce"

# On an Experiment: the UID of an earlier Experiment whose controller state (and default
# storage prefix) this one continues; without it a re-created Experiment starts fresh.
ANNOTATION_RESUME_FROM = "kubenas.dev/resume-from"

# Which part of an experiment a trial belongs to: the search (its reward updates the policy),
# or the final phase's grid points and retrains (they never do). The controller labels each
# Trial with it, the operator counts only search Trials toward the budget and the best, and
# `kubenas.trainer.final` lets only a final retrain read the test split.
LABEL_STAGE = "kubenas.dev/stage"
STAGE_SEARCH, STAGE_GRID, STAGE_FINAL = "search", "grid", "final"
STAGES = (STAGE_SEARCH, STAGE_GRID, STAGE_FINAL)

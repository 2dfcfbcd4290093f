"""The names an experiment may use for its search space, strategy and data set: the one
definition the spec parser (``kubenas.experiment``), the architecture contract, the CRD enums
and the registries (``kubenas.controller.spaces.SPACES``,
``kubenas.controller.strategies.STRATEGIES``, ``kubenas.trainer.config.DATASETS``) are tested
against (tests/kubenas/test_crd_agrees.py). Stdlib only, so the operator can read it without torch.
"""

SPACES = ("cnn", "rnn_cell", "nasbench201", "enas_macro")
# enas: one process trains a shared-weight supernet and the policy in turn (kubenas.enas),
# not one child per trial.
STRATEGIES = ("reinforce", "random", "evolution", "enas")
# Strategies with no cluster path yet (an ``enas`` Experiment as one Job is not built): the
# operator refuses them with a condition instead of running them as per-child searches.
LOCAL_ONLY_STRATEGIES = ("enas",)
DATASETS = ("digits", "fashion_mnist", "cifar10", "ptb")

# What an experiment gets when ``spec.search`` names none (the CRD's ``default:`` too).
DEFAULT_SPACE = "cnn"
DEFAULT_STRATEGY = "reinforce"

# On an Experiment: the UID of an earlier Experiment whose controller state (and default
# storage prefix) this one continues; without it a re-created Experiment starts fresh.
ANNOTATION_RESUME_FROM = "kubenas.dev/resume-from"

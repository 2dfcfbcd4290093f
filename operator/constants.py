"""Names shared by the CRDs, the reconciler, the Job builder and the executor."""

from kubenas.contracts import names

GROUP = "kubenas.dev"
VERSION = "v1"
API_VERSION = f"{GROUP}/{VERSION}"

EXPERIMENT_KIND = "Experiment"
EXPERIMENT_PLURAL = "experiments"
TRIAL_KIND = "Trial"
TRIAL_PLURAL = "trials"

# Labels (``kubectl get jobs -l kubenas.dev/experiment=X`` works on Trials, Jobs and pods).
LABEL_EXPERIMENT = "kubenas.dev/experiment"
LABEL_STAGE = names.LABEL_STAGE           # search | grid | final (the final phase's Trials)
LABEL_TRIAL = "kubenas.dev/trial"
LABEL_POOL = "kubenas.dev/pool"
LABEL_NAME = "app.kubernetes.io/name"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_PART_OF = "app.kubernetes.io/part-of"
APP_NAME = "kubenas"
MANAGED_BY = "kubenas-operator"

# Annotations.
ANNOTATION_TRIAL = "kubenas.dev/trial-name"          # full Trial name on Jobs and pods
ANNOTATION_STOP = "kubenas.dev/stop"                  # "true" on an Experiment: stop it now
ANNOTATION_RESUME_FROM = names.ANNOTATION_RESUME_FROM  # an earlier UID whose state to resume
ANNOTATION_EXPERIMENT_UID = "kubenas.dev/experiment-uid"  # on a Trial: the UID that sampled it

# Phases.
TRIAL_PENDING, TRIAL_RUNNING, TRIAL_SUCCEEDED, TRIAL_FAILED = (
    "Pending", "Running", "Succeeded", "Failed")
TRIAL_PHASES = (TRIAL_PENDING, TRIAL_RUNNING, TRIAL_SUCCEEDED, TRIAL_FAILED)
TRIAL_TERMINAL = (TRIAL_SUCCEEDED, TRIAL_FAILED)

EXP_PENDING, EXP_SEARCHING, EXP_FINAL, EXP_SUCCEEDED, EXP_FAILED, EXP_STOPPED = (
    "Pending", "Searching", "Final", "Succeeded", "Failed", "Stopped")
# Searching: the search (Trials, or an in-process enas search); Final: the final phase
# (spec.final) after the search's budget
EXPERIMENT_PHASES = (EXP_PENDING, EXP_SEARCHING, EXP_FINAL, EXP_SUCCEEDED, EXP_FAILED, EXP_STOPPED)
EXPERIMENT_TERMINAL = (EXP_SUCCEEDED, EXP_FAILED, EXP_STOPPED)

# What the child needs in its container.
DEFAULT_IMAGE = "ghcr.io/kubenas/kubenas:0.1.0"
DEFAULT_CHILD_COMMAND = ("kubenas",)
CONTAINER_NAME = "train-child"
RUN_AS_USER = 10001          # the project image (Dockerfile) runs as this numeric non-root user
ENV_S3_ENDPOINT = "KUBENAS_S3_ENDPOINT"
ENV_ACCESS_KEY = "AWS_ACCESS_KEY_ID"
ENV_SECRET_KEY = "AWS_SECRET_ACCESS_KEY"
ENV_REGION = "AWS_DEFAULT_REGION"
GPU_RESOURCE = "nvidia.com/gpu"

COMPONENT = "kubenas-operator"    # Event source / field manager

# One image for every kubenas role:
#   kubenas operator | kubenas controller --experiment NAME | kubenas train-child ...
# The base carries CUDA, cuDNN and a matching torch + torchvision; pip keeps that torch.
FROM pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime

# The root filesystem is read-only in the cluster (readOnlyRootFilesystem); /tmp is an
# emptyDir there, so HOME and every cache point into it.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOME=/tmp \
    XDG_CACHE_HOME=/tmp/.cache \
    MPLCONFIGDIR=/tmp/matplotlib \
    TORCH_HOME=/tmp/torch \
    KUBENAS_CACHE_DIR=/tmp/kubenas-cache

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

WORKDIR /opt/kubenas

# 1. Dependencies only: this layer is rebuilt only when pyproject.toml changes. A stub
#    package stands in for the code; the constraint keeps the base image's torch and
#    torchvision (pip must never swap in another CUDA build).
COPY pyproject.toml ./
RUN pip list --format=freeze | grep -iE '^(torch|torchvision)==' > /tmp/constraints.txt \
    && mkdir kubenas && touch kubenas/__init__.py \
    && pip install '.[torch,k8s]' -c /tmp/constraints.txt \
    && pip uninstall -y kubenas \
    && rm -rf kubenas build ./*.egg-info /tmp/constraints.txt

# 2. The code. kubenas/controller, kubenas/trainer and kubenas/operator are symlinks to
#    the top-level folders, so those are copied too; the wheel build follows the links.
COPY kubenas/ ./kubenas/
COPY controller/ ./controller/
COPY trainer/ ./trainer/
COPY operator/ ./operator/
RUN pip install --no-deps . \
    && rm -rf build ./*.egg-info \
    && kubenas --help > /dev/null

# 3. A numeric non-root user, so a pod's runAsNonRoot can verify it.
RUN groupadd --gid 10001 kubenas \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin kubenas
USER 10001:10001
WORKDIR /tmp

ENTRYPOINT ["kubenas"]
CMD ["--help"]

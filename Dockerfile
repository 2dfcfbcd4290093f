# One image for every kubenas role:
#   kubenas operator | kubenas controller --experiment NAME | kubenas train-child ...
#
# The base provides Python and torch. Published builds use a CUDA PyTorch base (the default);
# `make image` builds the same file FROM a locally made CPU torch base, with no registry:
#   podman build --format docker --build-arg BASE_IMAGE=localhost/kubenas-torch-cpu:... .
# (--format docker: the OCI format silently drops SHELL, and with it pipefail.)
ARG BASE_IMAGE=pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime
FROM ${BASE_IMAGE}

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

# 1. Dependencies only, pinned (requirements/image.txt, from scripts/lock-image-deps.py): this
#    layer is rebuilt only when the lock changes. torch comes from the base and is never
#    swapped (the lock has none); a base without torch gets the one pyproject asks for.
COPY requirements/image.txt ./requirements.txt
RUN pip install -r requirements.txt \
    && { python -c "import torch" 2>/dev/null || pip install "torch>=2.4"; } \
    && rm requirements.txt

# 2. The code. kubenas/controller, kubenas/trainer and kubenas/operator are symlinks to
#    the top-level folders, so those are copied too; the wheel build follows the links.
COPY pyproject.toml README.md ./
COPY kubenas/ ./kubenas/
COPY controller/ ./controller/
COPY trainer/ ./trainer/
COPY operator/ ./operator/
#    The import check runs isolated (-I) so that the source's operator/ in the working
#    directory cannot shadow the stdlib module.
RUN pip install --no-deps . \
    && rm -rf build ./*.egg-info \
    && python -I -c "import kubenas.trainer, kubenas.operator, kubenas.controller, torch" \
    && kubenas --help > /dev/null

# 3. A numeric non-root user, so a pod's runAsNonRoot can verify it.
RUN groupadd --gid 10001 kubenas \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin kubenas
USER 10001:10001
WORKDIR /tmp

ENTRYPOINT ["kubenas"]
CMD ["--help"]

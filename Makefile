# kubenas — the two commands a newcomer needs: `make run` and `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
PYTHON ?= python3

.PHONY: install run test lint dev-tools image dev-cluster dev-cluster-down clean

# The image's lock constrains the venv too, so tests run against the versions the image ships
# (and the lock stays current however far PyPI has moved since it was written).
$(VENV)/.installed: pyproject.toml requirements/image.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c requirements/image.txt -e '.[torch,k8s,bench,test]'
	touch $@

install: $(VENV)/.installed

## Install and run the quickstart search locally (no cluster, filesystem storage).
run: install
	$(VENV)/bin/kubenas run examples/quickstart.yaml --workdir runs/quickstart

lint: install
	$(VENV)/bin/lint-imports

## Install everything the tests need (Python deps, the control plane, S3) and run them.
test: install dev-tools image lint
	$(PY) -m pytest

## The real test environment's tools: etcd, Go, kubectl 1.20, chromium (apt); kube-apiserver/-controller-manager/
## -scheduler v1.20.2 built once from Debian's source (~4 min) and helm, cached in ~/.cache/kubenas.
dev-tools: install
	bash devenv/install-tools.sh

## The project's image, built from the Dockerfile with podman FROM a locally made CPU torch base
## (no registry; the bases are cached in ~/.cache/kubenas/images): localhost/kubenas:dev.
image: dev-tools
	bash scripts/build-image.sh

## Start the local cluster: k8s v1.20 control plane, SeaweedFS S3 and two real nodes (kubelet +
## containerd + runc, each in its own network namespace, running the image) in pools pool-a and
## pool-b; prints KUBECONFIG/S3 settings (`source .devenv/env`).
dev-cluster: dev-tools image
	$(PY) devenv/cluster.py up

dev-cluster-down:
	$(PY) devenv/cluster.py down

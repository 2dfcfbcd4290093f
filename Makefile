# kubenas — the two commands a newcomer needs: `make run` and `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
PYTHON ?= python3

.PHONY: install run test lint dev-tools dev-cluster dev-cluster-down clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[torch,k8s,bench,test]'
	touch $@

install: $(VENV)/.installed

## Install and run the quickstart search locally (no cluster, filesystem storage).
run: install
	$(VENV)/bin/kubenas run examples/quickstart.yaml --workdir runs/quickstart

lint: install
	$(VENV)/bin/lint-imports

## Install everything the tests need (Python deps, the control plane, S3) and run them.
test: install dev-tools lint
	$(PY) -m pytest

## The real test environment's tools: etcd, Go, kubectl 1.20 (apt); kube-apiserver/-controller-manager/
## -scheduler v1.20.2 built once from Debian's source (~4 min) and helm, cached in ~/.cache/kubenas.
dev-tools: install
	bash devenv/install-tools.sh

## Start the local cluster (k8s v1.20 + fake-kubelet GPU nodes + SeaweedFS S3) on 127.0.0.1;
## prints KUBECONFIG/S3 settings (`source .devenv/env`); pod logs in .devenv/pods/<ns>_<pod>.log.
dev-cluster: dev-tools
	$(PY) devenv/cluster.py up

dev-cluster-down:
	$(PY) devenv/cluster.py down

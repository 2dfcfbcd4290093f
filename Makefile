# kubenas — the two commands a newcomer needs: `make run` and `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
PYTHON ?= python3

.PHONY: install run test lint dev-cluster dev-cluster-down clean

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
test: install lint
	$(PY) -m pytest

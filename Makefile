# kube-vgpu: one entry point for set-up, build, lint and tests. Everything installs itself.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
BUILD := build
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: all venv build lint test test-fast bench demo demo-k8s header clean
all: test

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

# Component builds add themselves to BUILD_TARGETS in mk/*.mk (shim, fake NVML, fake driver, protos).
BUILD_TARGETS :=
include $(wildcard mk/*.mk)

build: venv $(BUILD_TARGETS)

header: venv
	$(PY) -m vcuda.contract --emit-c-header

lint: build
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy vcuda extender plugin kube_vgpu_kubectl tests
	$(VENV)/bin/lint-imports

test: lint
	$(VENV)/bin/pytest -m "not gpu" $(PYTEST_ARGS)

test-fast: build
	$(VENV)/bin/pytest -m "not gpu and not slow" -x $(PYTEST_ARGS)

bench: build
	$(PY) -m tests.bench

demo: build
	$(PY) -m tests.sim.demo

# The same example pods on the real control plane of tests/k8s (docs/testing.md).
demo-k8s: venv $(HELM) $(K8S_STAMP)
	$(PY) -m tests.k8s.demo

clean:
	rm -rf $(BUILD) $(VENV) .mypy_cache .ruff_cache .pytest_cache

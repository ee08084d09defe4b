# The few commands people type. Everything runs from a project-local virtualenv (.venv).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
BUF_VERSION := 1.75.0
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: help setup demo demo-rollout demo-server test test-fast lint fmt proto proto-check bench sampling-report clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 16

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@rm -f $(VENV)/.installed-*; touch $@

.tools/node_modules/.bin/buf:
	npm install --silent --no-audit --no-fund --prefix .tools @bufbuild/buf@$(BUF_VERSION)

# Prometheus and promtool from Debian's package, unpacked without installing or starting a service
# (the rollout tests run a real Prometheus on loopback).
PROMETHEUS := .tools/prometheus/usr/bin/prometheus
$(PROMETHEUS):
	rm -rf .tools/prometheus-deb && mkdir -p .tools/prometheus-deb
	cd .tools/prometheus-deb && apt-get download prometheus
	dpkg -x .tools/prometheus-deb/prometheus_*.deb .tools/prometheus
	@test -x $@

setup: $(STAMP) .tools/node_modules/.bin/buf $(PROMETHEUS)  ## create .venv with the gateway, client, orchestrator and dev tools (and Prometheus)

demo: setup  ## run the sidecar on embedded SQLite with realistic traffic, print what landed
	$(BIN)/mangaassist-demo --workdir .demo

release-demo: setup  ## the release control plane on embedded SQLite: bootstrap, a candidate without citations, evaluate, compare
	$(BIN)/python -m orchestrator.tools.release_demo --workdir .release-demo

demo-rollout: setup  ## shadow and canary on loopback with simulated customers: a good candidate promoted, a bad one rolled back
	$(BIN)/python -m orchestrator.tools.rollout_demo --workdir .rollout-demo

demo-server: setup  ## the same traffic through a local `mlflow server`, stopped mid-run (then the release steps)
	$(BIN)/mangaassist-demo --workdir .demo-server --mlflow-server

test: setup  ## the whole suite: unit, client, integration (real mlflow servers, PostgreSQL)
	$(BIN)/python -m pytest

test-fast: setup  ## gateway, client and contract tests without the slow ones (seconds)
	$(BIN)/python -m pytest -m "not slow" tests/gateway tests/clients tests/contracts

lint: setup  ## ruff (lint and format check), mypy, buf lint, stub drift
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	cd proto && ../.tools/node_modules/.bin/buf lint
	$(BIN)/python -m clients.codegen --check

fmt: setup  ## apply ruff's fixes and its formatter
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

proto: setup  ## regenerate clients/pb from proto/
	$(BIN)/python -m clients.codegen

bench: setup  ## client request-path cost, pipeline stage cost per span, redaction speed
	$(BIN)/python bench/client_overhead.py
	$(BIN)/python bench/pipeline_stages.py
	$(BIN)/python bench/redaction.py

sampling-report: setup  ## 10,000 traces at ratio 0.1 through a real gateway: what was stored, what was counted
	$(BIN)/python -m pytest tests/integration/test_sampling_e2e.py -k ten_thousand -s -q -p no:warnings

clean:  ## remove the venv, tools and demo output
	rm -rf $(VENV) .tools .demo .demo-server .release-demo .pytest_cache .mypy_cache .ruff_cache

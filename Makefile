# The few commands people type. Everything runs from a project-local virtualenv (.venv).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
BUF_VERSION := 1.75.0
UV_VERSION  := 0.13.8
LOCK   := requirements/dev.lock
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml $(LOCK) | cksum | cut -d' ' -f1)

.PHONY: help setup demo demo-rollout demo-serve demo-server stack stack-down stack-rehearsal test test-fast lint fmt proto proto-check bench sampling-report lock lock-check deploy-check clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 16

# The venv gets exactly the hash-pinned lock, then the project itself without dependencies.
$(STAMP): pyproject.toml $(LOCK)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --require-hashes -r $(LOCK)
	$(BIN)/python -m pip install --quiet --no-deps -e .
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

# Debian's Chromium for the chat page test (tests/orchestrator/test_chat_page.py drives it with Playwright;
# `playwright install` is not used). Installing needs root; otherwise say what to run (that test then fails).
CHROMIUM := /usr/bin/chromium
$(CHROMIUM):
	@if [ "$$(id -u)" = 0 ]; then \
		apt-get install -y --no-install-recommends chromium \
		|| { apt-get update && apt-get install -y --no-install-recommends chromium; }; \
	else \
		echo "make setup: $(CHROMIUM) is missing and this is not root; run" \
			"'sudo apt-get install -y --no-install-recommends chromium' (needed by tests/orchestrator/test_chat_page.py)"; \
	fi

setup: $(STAMP) .tools/node_modules/.bin/buf $(PROMETHEUS) $(CHROMIUM)  ## create .venv with the gateway, client, orchestrator and dev tools (and Prometheus, Chromium)

demo: setup  ## run the sidecar on embedded SQLite with realistic traffic, print what landed
	$(BIN)/mangaassist-demo --workdir .demo

release-demo: setup  ## the release control plane on embedded SQLite: bootstrap, a candidate without citations, evaluate, compare
	$(BIN)/python -m orchestrator.tools.release_demo --workdir .release-demo

demo-rollout: setup  ## shadow and canary on loopback with simulated customers: a good candidate promoted, a bad one rolled back
	$(BIN)/python -m orchestrator.tools.rollout_demo --workdir .rollout-demo

demo-serve: setup  ## leave the chatbot, its gateway and MLflow running: the chat page on 127.0.0.1 until Ctrl-C
	$(BIN)/mangaassist-demo --workdir .demo-serve --serve

demo-server: setup  ## the same traffic through a local `mlflow server`, stopped mid-run (then the release steps)
	$(BIN)/mangaassist-demo --workdir .demo-server --mlflow-server

stack: setup  ## a production-like stack on loopback in .stack/: MLflow (PostgreSQL, S3 on moto, basic-auth), Prometheus, 2 gateways, 2 chatbots, a proxy
	$(BIN)/python -m orchestrator.tools.stack up --workdir .stack

stack-down:  ## stop exactly what `make stack` started (its .stack/state.json)
	$(BIN)/python -m orchestrator.tools.stack down --workdir .stack

stack-rehearsal: setup  ## scale-out rehearsal: 2 MLflow replicas on one PostgreSQL database, 2,000 chats, delivery and loss
	$(BIN)/python -m orchestrator.tools.stack rehearse --workdir .stack-rehearsal

test: setup  ## the whole suite: unit, client, integration (real mlflow servers, PostgreSQL)
	$(BIN)/python -m pytest

test-fast: setup  ## gateway, client and contract tests without the slow ones (seconds)
	$(BIN)/python -m pytest -m "not slow" tests/gateway tests/clients tests/contracts

lint: setup lock-check  ## the locks and .venv against pyproject.toml, ruff (lint and format check), mypy, buf lint, stub drift
	$(BIN)/python requirements/lock.py check-env
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	cd proto && ../.tools/node_modules/.bin/buf lint
	$(BIN)/python -m clients.codegen --check

deploy-check: setup  ## render every deploy/k8s overlay (kubectl kustomize), validate it (kubernetes-validate --strict at 1.29 and the newest; CRs against deploy/k8s/schemas)
	$(BIN)/python deploy/k8s/check.py

fmt: setup  ## apply ruff's fixes and its formatter
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

proto: setup  ## regenerate clients/pb from proto/
	$(BIN)/python -m clients.codegen

# Bars are ratios to a reference in the same run: ingest_ab's last line is gateway/floor CPU per span (bar <= 1.67).
bench: setup  ## client request-path cost, pipeline stage cost per span, redaction speed, ingest against its floor
	$(BIN)/python bench/client_overhead.py
	$(BIN)/python bench/pipeline_stages.py
	$(BIN)/python bench/redaction.py
	$(BIN)/python bench/ingest_ab.py --b-floor --rounds 6

sampling-report: setup  ## 10,000 traces at ratio 0.1 through a real gateway: what was stored, what was counted
	$(BIN)/python -m pytest tests/integration/test_sampling_e2e.py -k ten_thousand -s -q -p no:warnings

# uv only compiles the locks; it is not in the venv (installs are pip's, from the lock).
UV := .tools/uv-venv/bin/uv
$(UV):
	$(PYTHON) -m venv .tools/uv-venv
	.tools/uv-venv/bin/python -m pip install --quiet uv==$(UV_VERSION)

lock: $(STAMP) $(UV)  ## regenerate requirements/*.lock after a pyproject.toml change (LOCK_ARGS="--upgrade-package NAME" moves a pin)
	$(BIN)/python requirements/lock.py lock --uv $(UV) $(LOCK_ARGS)

# Offline and fast: the lock headers' sha256 of their pyproject.toml inputs, and every requirement pinned
# with hashes (requirements/lock.py says why this and not a re-resolve and diff).
lock-check: $(STAMP)  ## the locks match pyproject.toml (run by lint)
	$(BIN)/python requirements/lock.py check

clean:  ## remove the venv, tools and demo output
	rm -rf $(VENV) .tools .demo .demo-serve .demo-server .release-demo .stack .stack-rehearsal .pytest_cache .mypy_cache .ruff_cache

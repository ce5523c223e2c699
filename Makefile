# The few entry points people type. Each one sets up .venv first (once, and again when
# pyproject.toml changes).
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: demo test lint format bench clips clean

demo: $(VENV)/.installed  ## Run the whole pipeline locally, nothing to configure
	$(BIN)/kling-jobs demo

test: lint  ## Lint, type-check and run every test (RabbitMQ and Redis on 127.0.0.1)
	$(BIN)/pytest

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(VENV)/.installed
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: $(VENV)/.installed  ## kling-worker vs celery -A worker worker, 200 ms and 5 s upstream (~5 min)
	$(BIN)/python -m benchmarks.bench

clips: $(VENV)/.installed  ## Remake the sample clips in simulator/clips
	$(BIN)/python scripts/make_clips.py

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

clean:
	rm -rf $(VENV) .kling-broker .kling-demo .pytest_cache .mypy_cache .ruff_cache

# run-orchestrator: every target creates the venv first when it is missing.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed

.PHONY: install run test lint bench emulator clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## The main job: the worker, against the bundled emulator when no API key is configured.
run: $(STAMP)
	$(BIN)/orchestrator demo

test: $(STAMP)
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check orchestrator orchestrator_pytest.py handlers tests examples bench
	$(BIN)/ruff format --check orchestrator orchestrator_pytest.py handlers tests examples bench
	$(BIN)/mypy --strict orchestrator orchestrator_pytest.py

bench: $(STAMP)
	$(BIN)/python -m bench

emulator: $(STAMP)
	$(BIN)/orchestrator emulator --port 8089

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

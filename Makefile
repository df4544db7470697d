# Set-up is part of every target: each creates .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8080

.PHONY: run test lint conformance clean

$(BIN)/scim-server: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

run: $(BIN)/scim-server
	$(BIN)/scim-server serve --sandbox --migrate --host $(HOST) --port $(PORT)

test: $(BIN)/scim-server
	$(BIN)/pytest -q -n auto --maxprocesses 4

lint: $(BIN)/scim-server
	$(BIN)/ruff check .
	$(BIN)/ruff format --check scim_server models tests benchmarks
	$(BIN)/mypy

conformance: $(BIN)/scim-server
	bash conformance/scim2_tester.sh 18080
	bash conformance/scim2_tester.sh 18081 --no-sync

clean:
	rm -rf $(VENV) .venv-conformance instance .pytest_cache .mypy_cache .ruff_cache .hypothesis

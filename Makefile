PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
NPM ?= npm
NODE_DIR := tests/node
NODE_STAMP := $(NODE_DIR)/node_modules/.installed

.PHONY: install node-deps run test lint typecheck unit integration bench bench-quick clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test,bench]'
	touch $(STAMP)

install: $(STAMP)

# The booking backend's own client, @hubspot/api-client, pinned in tests/node/package-lock.json:
# the SDK flow tests run it through the gateway. No npm means no test run, not a skipped test.
$(NODE_STAMP): $(NODE_DIR)/package.json $(NODE_DIR)/package-lock.json
	@command -v node >/dev/null 2>&1 || { echo "make: node (Node.js >= 18) is required by make test: the booking flow runs with @hubspot/api-client" >&2; exit 1; }
	@command -v $(NPM) >/dev/null 2>&1 || { echo "make: npm is required by make test: it installs @hubspot/api-client from $(NODE_DIR)/package-lock.json" >&2; exit 1; }
	cd $(NODE_DIR) && $(NPM) ci --no-audit --no-fund
	touch $(NODE_STAMP)

node-deps: $(NODE_STAMP)

run: $(STAMP)
	$(BIN)/hubspot-proxy run

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

test: lint typecheck node-deps
	$(BIN)/pytest

bench: $(STAMP)
	$(BIN)/python -m bench

bench-quick: $(STAMP)
	$(BIN)/python -m bench --quick

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache build *.egg-info $(NODE_DIR)/node_modules

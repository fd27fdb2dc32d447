# qbo-sync: `make run` runs the whole engine locally, `make test` runs the tests.
# Both bootstrap .venv from nothing but python3.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-fast lint typecheck check bench chaos clean help chromium screenshots

help:
	@echo "make run    - start Temporal (UI :8233), the QuickBooks emulator (:8900), the API (:8000) and a worker"
	@echo "make test   - lint, type-check and run every test against real servers"
	@echo "make screenshots - write a PNG of each screen of the web app (/app/) under var/screenshots/"
	@echo "make test-fast - the inner loop: unit, workflow and client tests (under a minute; no lint)"
	@echo "make bench  - run the benchmarks in bench/ and print their figures (BENCH_ARGS=--quick for a short run)"
	@echo "make chaos  - 1,000 invoices through kill -9, restarts and Intuit's failures; checks nothing is lost (CHAOS_ARGS=...)"

$(STAMP): pyproject.toml requirements.lock requirements-dev.lock
	$(PYTHON) -c 'import sys; sys.exit("qbo-sync needs Python 3.11 (found %d.%d)" % sys.version_info[:2] if sys.version_info[:2] != (3, 11) else 0)'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24"
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements-dev.lock
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/python scripts/run_local.py

lint: $(STAMP)
	$(BIN)/ruff check --no-cache .
	$(BIN)/ruff format --no-cache --check .

typecheck: $(STAMP)
	$(BIN)/mypy .

test: lint typecheck chromium
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The browser tests (tests/browser) drive Debian's Chromium; Playwright never downloads a browser. Installed here
# when missing, as root or with sudo (without a password prompt); otherwise this says what to run.
CHROMIUM_PATH ?= /usr/bin/chromium
export CHROMIUM_PATH
chromium:
	@test -x $(CHROMIUM_PATH) || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; \
	  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO=sudo; \
	  else echo "Chromium is missing at $(CHROMIUM_PATH) and this user cannot install it: run" \
	    "'sudo apt-get install -y chromium' (Debian), or set CHROMIUM_PATH." >&2; exit 1; fi; \
	  echo "Installing Chromium for the browser tests (apt-get install -y chromium)..."; \
	  $$SUDO apt-get install -y chromium || { $$SUDO apt-get update && $$SUDO apt-get install -y chromium; }; }

# Each screen of the web app as a PNG under var/screenshots/ (the browser tests write them as they go).
screenshots: $(STAMP) chromium
	rm -rf var/screenshots
	SCREENSHOTS_DIR=var/screenshots $(BIN)/python -m pytest tests/browser -q -p no:cacheprovider
	@ls var/screenshots

# The inner loop: the state machines on the time-skipping server with fake activities, the QuickBooks client
# against the emulator, and the unit tests. `make test` runs everything, end to end.
test-fast: $(STAMP)
	$(BIN)/python -m pytest tests/unit tests/workflows tests/qbo -q $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)

# Needs PostgreSQL's server binaries (initdb, pg_ctl; PG_BIN=... if not in /usr/lib/postgresql/*/bin): the run
# starts and restarts a cluster of its own. `python -m bench.chaos --help` lists CHAOS_ARGS.
chaos: $(STAMP)
	$(BIN)/python -m bench.chaos $(CHAOS_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache

# Smartfleet — the commands a user and CI run.
#   make demo   set everything up, start the stack, run 100 real sessions against the demo site
#   make test   set everything up and run the test suite
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.installed-bench

.PHONY: setup browser proto proto-check lint test test-fast demo bench soak clean

$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $(STAMP)

setup: $(STAMP) browser

# The benchmarks' extra: profilers (py-spy, pyinstrument) for `python -m bench.pipeline --profile`.
$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install -q -e '.[dev,bench]'
	@touch $(BENCH_STAMP)

browser: $(STAMP)
	@bash scripts/ensure-browser.sh $(PY)

proto: $(STAMP)
	$(PY) scripts/gen_proto.py

proto-check: $(STAMP)
	$(PY) scripts/gen_proto.py --check

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test: setup proto-check
	$(VENV)/bin/pytest -q -p no:cacheprovider

test-fast: $(STAMP)
	$(VENV)/bin/pytest -q -m "not slow and not browser"

demo: setup
	bash scripts/demo.sh

# Benchmarks of issue 5: ~3.5 minutes on 2 cores; writes bench/results/latest.{md,json}.
bench: setup $(BENCH_STAMP)
	$(PY) -m bench.run

# Miniature soak: 2,000 sessions on one node (~12 minutes); writes bench/results/soak.{md,json}.
soak: setup
	$(PY) -m bench.soak

clean:
	rm -rf $(VENV) .smartfleet

# sela-edu: every command creates the virtual environment first when it is missing.
# `make run` is the main job, `make test` the whole test suite (what CI runs).

SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# the shared machines' pip warns about every package it looks up in a missing local index: hide that noise
QUIET_PIP := { grep -v "is ignored: it is neither a file nor a directory" || true; }

.PHONY: help venv run test test-fast bench demo-solver student clean

help:
	@echo "make run    - the main job: run the notebook series on the embedded digits data, print the summary"
	@echo "make test   - the whole test suite (pytest + nbval), as CI runs it"
	@echo "make demo-solver, make bench, make student, make clean"

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -e '.[dev]' 2>&1 | $(QUIET_PIP)
	@touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	$(BIN)/sela-edu run

demo-solver: $(STAMP)
	$(BIN)/python -m sela_edu.solver_demo

test: $(STAMP)
	@rc=0; $(BIN)/python -m pytest $(PYTEST_ARGS) || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: treating as a failure"; exit 1; fi; exit $$rc

test-fast: PYTEST_ARGS = -m "not slow"
test-fast: test

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_sinkhorn.py

student: $(STAMP)
	$(BIN)/sela-edu student

clean:
	rm -rf $(VENV) results student .pytest_cache

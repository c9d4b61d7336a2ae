# sela-edu: every command creates the virtual environment first when it is missing.
# `make run` is the main job, `make test` the whole test suite (what CI runs), `make lab` opens the course.

SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# the shared machines' pip warns about every package it looks up in a missing local index: hide that noise
QUIET_PIP := { grep -v "is ignored: it is neither a file nor a directory" || true; }

.PHONY: help venv run test test-fast lab bench demo-solver student instructor clean

help:
	@echo "make run    - the main job: run the notebook series (Fashion-MNIST from the data root, else the digits), print the summary"
	@echo "make test   - the whole test suite (pytest + nbval), as CI runs it"
	@echo "make lab    - JupyterLab on the kit's environment, opened at notebooks/ (LAB_ARGS=... for more options)"
	@echo "make demo-solver, make bench, make student, make instructor, make clean"

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -e '.[dev]' 2>&1 | $(QUIET_PIP)
	@touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	$(BIN)/sela-edu run

# the notebooks name the kernel "python3": register this environment's interpreter under that name (in the
# venv, which Jupyter prefers to user-wide kernels when it runs from a venv), then serve notebooks/ (as root,
# e.g. in a container, Jupyter refuses to start without --allow-root)
LAB_ARGS ?=
lab: $(STAMP)
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (ipykernel)" > /dev/null
	$(BIN)/jupyter lab --ServerApp.root_dir=notebooks $(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_ARGS)

# its figure is one of the committed ones, so it writes to figures/ (interactive runs write to results/figures/)
demo-solver: $(STAMP)
	SELA_FIGURES_DIR=figures $(BIN)/python -m sela_edu.course.studies.solver_demo

test: $(STAMP)
	@rc=0; $(BIN)/python -m pytest $(PYTEST_ARGS) || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: treating as a failure"; exit 1; fi; exit $$rc

test-fast: PYTEST_ARGS = -m "not slow"
test-fast: test

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_sinkhorn.py

student: $(STAMP)
	$(BIN)/sela-edu student

instructor: $(STAMP)
	$(BIN)/sela-edu instructor

clean:
	rm -rf $(VENV) results student instructor_edition .pytest_cache

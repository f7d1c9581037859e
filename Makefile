# Entry points: `make demo` (set up + quickstart run), `make test` (set up + the full test suite, as CI
# runs it) and `make test-fast` (set up + the fast tier: the tests not marked slow, for between edits).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast install clean-venv
# plain `make`: the venv with dropbn and every extra the tests use
.DEFAULT_GOAL := install

$(BIN)/python:
	$(PY) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q --upgrade pip
	# torch/torchvision first, at the versions the project is tested with; where pip
	# cannot get those, it resolves the pyproject ranges as usual.
	$(BIN)/pip install -q "torch==2.14.1" "torchvision==0.29.1" || $(BIN)/pip install -q torch torchvision
	$(BIN)/pip install -q -e ".[test,launchers,tracking,search]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/dropbn train +exp=quickstart

# two pytest-xdist workers (the CI machine's 2 cores), each test module on one worker, so that a
# module-scoped fixture (a finished sweep, study, wheel) is built once. XDIST= runs in one process.
XDIST ?= -n 2 --dist loadscope

test: $(STAMP)
	$(BIN)/python -m pytest -q $(XDIST) $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow" $(XDIST) $(PYTEST_ARGS)

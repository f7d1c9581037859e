# Two entry points: `make demo` (set up + quickstart run) and `make test` (set up + pytest).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test install clean-venv
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

test: $(STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

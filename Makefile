# Two commands on a fresh clone (Python 3.11+):  make demo   |   make test
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test test-all bench lint clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# CPU torch first (pinned): an unpinned torch would pull the multi-GB CUDA build.
	$(BIN)/python -m pip install --quiet -c constraints.txt torch==2.13.0
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/bayesbridge demo

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 --timeout=900 --durations=15

test-all: $(STAMP)
	$(BIN)/python -m pytest -n 2 -m ''

bench: $(STAMP)
	$(BIN)/bayesbridge bench --quick

lint: $(STAMP)
	$(BIN)/ruff check bayesbridge tests benchmarks

clean:
	rm -rf $(VENV) .pytest_cache

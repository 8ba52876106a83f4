# Two commands on a fresh clone (Python 3.11+):  make demo   |   make test
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test test-all bench docs lint clean

# Two pytest workers share two cores: OpenMP threads (numba's parallel kernels, torch) must sleep
# rather than spin while they wait, and numpy's BLAS keeps one thread per worker; otherwise a
# worker running many small tensor ops next to a parallel kernel runs 10-20x slower.
TEST_ENV := OMP_WAIT_POLICY=PASSIVE OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1

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
	$(TEST_ENV) $(BIN)/python -m pytest -n 2 --timeout=900 --durations=15

test-all: $(STAMP)
	$(TEST_ENV) $(BIN)/python -m pytest -n 2 -m ''

# the full comparison with every peer (DAPPER, filterpy: the `bench` extra); `bayesbridge bench --quick` is shorter
bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev,bench]'
	$(BIN)/bayesbridge bench

# the documentation site (the `docs` extra) -> docs/_build/html/index.html; offline, and -W: any warning fails
docs: $(STAMP)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev,docs]'
	$(BIN)/python -m sphinx -W --keep-going -b html docs docs/_build/html

lint: $(STAMP)
	$(BIN)/ruff check bayesbridge tests benchmarks

clean:
	rm -rf $(VENV) .pytest_cache docs/_build docs/_generated docs/api/generated

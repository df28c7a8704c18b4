# Two commands on a fresh machine: `make serve` and `make test` (README).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PORT   ?= 3000
STAMP  := $(VENV)/.installed-$(shell cat requirements.lock pyproject.toml | sha256sum | cut -c1-12)

.PHONY: install models serve test bench loadtest clean

install: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.lock
	$(BIN)/pip install -q --no-deps -e .
	rm -f $(VENV)/.installed-*; touch $@

# The model repository is a build output: rebuilt when a converter or a pinned source changes.
models: install model_repository/build_report.json

model_repository/build_report.json: $(wildcard converters/*.py) converters/sources.sha256
	$(BIN)/python -m converters.build

serve: models
	$(BIN)/bentoml serve service:Liveness --host 0.0.0.0 --port $(PORT)

test: models
	$(BIN)/python -m pytest -q

# Benchmarks measure; they are not tests.  Results go to docs/PERFORMANCE.md.
bench: models
	$(BIN)/python benchmarks/bench_report.py

clean:
	rm -rf model_repository .pytest_cache

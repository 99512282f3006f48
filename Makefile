# The two commands a newcomer needs: `make bench` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SRC := batchq tests benchmarks

.PHONY: test bench lint typecheck unit clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# editable_mode=compat installs a plain .pth path entry instead of an import hook, so that type
# checkers (mypy, pyright) in a project using this environment find batchq and its py.typed.
$(VENV)/.installed: $(BIN)/python pyproject.toml setup.py
	$(BIN)/pip install -q -e '.[test,bench]' --config-settings editable_mode=compat
	touch $@

# The optional pylibmc client, so that its tests run against real memcached. pip takes pylibmc's
# wheel where there is one (Linux x86_64; it bundles libmemcached) and else compiles it against
# libmemcached-dev, which ensure-memcached.sh installs first. Once per venv; if it cannot be
# installed here, its tests skip and say how to install it.
$(VENV)/.pylibmc: $(VENV)/.installed
	bash scripts/ensure-memcached.sh
	if $(BIN)/pip install -q -e '.[test,bench,pylibmc]' --config-settings editable_mode=compat; \
	then touch $@; else echo "pylibmc did not build: its tests and benchmarks are skipped" >&2; fi

## make test: unit + integration tests (real memcached, pylibmc), mypy --strict, ruff
test: $(VENV)/.pylibmc
	bash scripts/ensure-memcached.sh
	$(BIN)/ruff check $(SRC)
	$(BIN)/ruff format --check $(SRC)
	$(BIN)/mypy --strict batchq tests/typing
	$(BIN)/python -m pytest

## make bench: the benchmark suite on the embedded cache (and a real memcached when present)
bench: $(VENV)/.installed
	if [ "$$BENCH_MEMCACHED" = "1" ]; then $(MAKE) $(VENV)/.pylibmc; fi
	$(BIN)/python -m benchmarks

unit: $(VENV)/.installed
	$(BIN)/python -m pytest -m "not memcached"

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache .pytest_cache

# Two commands: `make run` starts the broker, `make test` runs the whole suite.
# Both work from a fresh clone: the first use creates .venv and installs Wharf into it.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LINT_PATHS := src tests $(wildcard benchmarks)

.PHONY: run test lint typecheck deps

$(STAMP): pyproject.toml
	@$(PY) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { \
	  echo "wharf needs Python 3.11 or newer; $(PY) is $$($(PY) --version 2>&1)" >&2; exit 1; }
	@$(PY) -c 'import ensurepip' 2>/dev/null || bash .ci/system-deps venv
	test -x $(BIN)/pip || { rm -rf $(VENV) && $(PY) -m venv $(VENV); }
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/wharf serve

deps: $(STAMP)
	bash .ci/system-deps test

lint: $(STAMP)
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

test: deps lint typecheck
	$(BIN)/python -X dev -m pytest

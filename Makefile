# Two commands: `make run` starts the broker, `make test` runs the whole suite.
# Both work from a fresh clone: the first use creates .venv; `make run` installs Wharf alone
# into it (the runtime), `make test` adds the test extra (linters, type checker, client
# libraries, browser driver).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
VENV_STAMP := $(VENV)/.created
RUN_STAMP := $(VENV)/.installed-run
TEST_STAMP := $(VENV)/.installed-test
LINT_PATHS := src tests $(wildcard benchmarks)

.PHONY: run test lint typecheck deps

$(VENV_STAMP):
	@$(PY) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { \
	  echo "wharf needs Python 3.11 or newer; $(PY) is $$($(PY) --version 2>&1)" >&2; exit 1; }
	@$(PY) -c 'import ensurepip' 2>/dev/null || bash .ci/system-deps venv
	test -x $(BIN)/pip || { rm -rf $(VENV) && $(PY) -m venv $(VENV); }
	$(BIN)/python -m pip install -q --upgrade pip
	touch $@

$(RUN_STAMP): pyproject.toml | $(VENV_STAMP)
	$(BIN)/python -m pip install -q -e .
	touch $@

# the test extra holds the runtime too, so it satisfies `make run` as well
$(TEST_STAMP): pyproject.toml | $(VENV_STAMP)
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@ $(RUN_STAMP)

run: $(RUN_STAMP)
	$(BIN)/wharf serve

deps: $(TEST_STAMP)
	bash .ci/system-deps test

lint: $(TEST_STAMP)
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/lint-imports

typecheck: $(TEST_STAMP)
	$(BIN)/mypy

test: deps lint typecheck
	$(BIN)/python -X dev -m pytest

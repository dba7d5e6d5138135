# ContribFlow: the Makefile is the interface. `make help` lists every target.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DATE   ?= $(shell date -u +%F)
ROWS   ?= 10000

# Checks that `make test` runs besides pytest; each section below adds its own.
TEST_CHECKS :=

.PHONY: help
help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_.-]+:.*## / {printf "  %-16s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

# --- the pipeline --------------------------------------------------------------------------------

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e ".[dev]"
	@touch $@

.PHONY: install
install: $(VENV)/.installed ## Create .venv and install ContribFlow with everything the tests need

.PHONY: run
run: install ## Run the pipeline for DATE (default today) against $PG* or an embedded PostgreSQL
	$(BIN)/contribflow run --date $(DATE) --rows $(ROWS)

.PHONY: db-stop
db-stop: install ## Stop the embedded PostgreSQL that `make run` started
	$(BIN)/contribflow db stop

.PHONY: test
test: install ## Run every test: unit, integration (starts its own PostgreSQL) and the offline checks
	$(BIN)/pytest
	@for check in $(TEST_CHECKS); do $(MAKE) --no-print-directory $$check || exit 1; done

.PHONY: test-unit
test-unit: install ## Only the tests that need no database
	$(BIN)/pytest -m "not integration"

.PHONY: clean
clean: ## Remove the virtualenv, local state and generated files (stops the embedded database first)
	-@[ -x $(BIN)/contribflow ] && $(BIN)/contribflow db stop
	rm -rf $(VENV) .contribflow data dbt/target dbt/logs *.egg-info

# --- Argo Workflows (Hera) -----------------------------------------------------------------------

.PHONY: render
render: install ## Render the Hera workflows to workflows/rendered/*.yaml (commit the result)
	$(BIN)/python -m workflows.render

.PHONY: check-rendered
check-rendered: install ## Fail when workflows/rendered/ differs from what the Hera source renders
	$(BIN)/python -m workflows.render --check

TEST_CHECKS += check-rendered

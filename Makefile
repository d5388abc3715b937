# merit-collect: `make run` serves on a fresh machine, `make test` runs the whole suite.
# Only Python 3.11+ is needed; everything else is installed into .venv.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat setup.cfg pyproject.toml docker/constraints.txt | cksum | cut -d' ' -f1)
# Test processes (pytest-xdist): many tests wait on servers they start, so more than the CPUs.
TEST_WORKERS ?= 3
TEST_STAMP := $(VENV)/.installed-test-$(shell cat setup.cfg pyproject.toml docker/constraints.txt | cksum | cut -d' ' -f1)

.DEFAULT_GOAL := help
.PHONY: help run test lint format forms translations clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

$(VENV)/bin/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "Python 3.11 or newer is needed ($(PYTHON) is $$($(PYTHON) --version))"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# scripts/install.sh installs with the pins of docker/constraints.txt, as the Docker image does.
$(STAMP): $(VENV)/bin/python setup.cfg pyproject.toml docker/constraints.txt
	scripts/install.sh --venv $(VENV) --editable
	@rm -f $(VENV)/.installed-*; touch $@

$(TEST_STAMP): $(VENV)/bin/python setup.cfg pyproject.toml docker/constraints.txt
	scripts/install.sh --venv $(VENV) --editable --test
	@rm -f $(VENV)/.installed-*; touch $@ $(STAMP)

run: $(STAMP) ## Install, migrate, build the forms and serve on 127.0.0.1:8080 (MERIT_PORT)
	$(BIN)/merit forms build
	$(BIN)/merit serve

forms: $(STAMP) ## Compile xlsforms/ into forms/ (XForms, media, build records)
	$(BIN)/merit forms build

test: $(TEST_STAMP) ## Install the test extra and run the whole suite (SQLite and PostgreSQL)
	$(BIN)/ruff check server tests scripts
	$(BIN)/ruff format --check server tests scripts
	$(BIN)/python -m pytest -n $(TEST_WORKERS) $(PYTEST_ARGS)

lint: $(TEST_STAMP) ## ruff check and format check
	$(BIN)/ruff check server tests scripts
	$(BIN)/ruff format --check server tests scripts

format: $(TEST_STAMP) ## Format the code with ruff
	$(BIN)/ruff check --fix server tests scripts
	$(BIN)/ruff format server tests scripts

clean: ## Remove the virtual environment (keeps var/, the local data)
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache

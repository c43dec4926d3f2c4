# Two commands matter: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint format bench clean install

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

## demo: install, migrate an SQLite database in instance/, load demo data, print the logins, serve
demo: $(STAMP)
	$(BIN)/tracker db upgrade
	$(BIN)/tracker demo-data
	$(BIN)/tracker serve --host 127.0.0.1 --port 5000

## test: lint and the whole suite (SQLite, PostgreSQL, Redis, CLI, web)
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

## bench: figures for the README and issue notes (not part of the test suite)
bench: $(STAMP)
	$(BIN)/python bench/create_items.py
	$(BIN)/python bench/notifications.py
	$(BIN)/python bench/import.py
	$(BIN)/python bench/load.py

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache

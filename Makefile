# The two commands of the set-up: `make demo` and `make test`. Each creates .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test up bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/linebus demo configs/demo.toml

test: $(STAMP)
	$(BIN)/python -m pytest -q

up: $(STAMP)
	$(BIN)/linebus up configs/demo.toml

bench: $(STAMP)
	$(BIN)/linebus bench

clean:
	rm -rf $(VENV) .pytest_cache

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
	# The Node.js example client is tested too when npm is there (skipped, with a reason, if not).
	if command -v npm >/dev/null 2>&1; then npm install --prefix clients/node --no-audit --no-fund --silent; fi
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

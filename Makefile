# The two commands of the set-up: `make demo` and `make test`. Each creates .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test check unit up bench fuzz clean

$(STAMP): pyproject.toml setup.py bus/_speedups.c bus/_zmqcalls.c
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The Node.js package's dependencies, exactly as its lockfile pins them (again when it changes).
# Without npm nothing is installed and its tests skip, saying why; under CI=true (.ci/run, which
# installs npm) such a skip fails the run.
NODE_STAMP := clients/node/node_modules/.linebus-installed
$(NODE_STAMP): clients/node/package-lock.json
	if command -v npm >/dev/null 2>&1; then \
		npm ci --prefix clients/node --no-audit --no-fund --silent && touch $(NODE_STAMP); fi

demo: $(STAMP)
	$(BIN)/linebus demo configs/demo.toml

# Static checks first (seconds), then the whole suite with coverage of the product code,
# subprocesses included (actors, brokers and simulators the tests start); then the secured pass:
# the integration and contract tiers again, every test line with CURVE, keys and access lists
# (tests/conftest.py), its coverage added to the first's.
# Both passes run their test files on $(JOBS) workers (pytest-xdist, a file per worker at a time,
# so a module's line stays in one process): most of an integration test is waiting for processes
# and deadlines, and one worker kept the 2 cores of a CI machine about half busy.
JOBS ?= 2
PYTEST := $(BIN)/python -m pytest -q -n $(JOBS) --dist loadfile
test: check $(NODE_STAMP)
	$(PYTEST) --cov --cov-report=
	LINEBUS_TEST_SECURE=1 $(PYTEST) tests/integration tests/contract \
		--cov --cov-append --cov-report=term:skip-covered

# Lint, format, types, import layers: the same checks .pre-commit-config.yaml runs.
check: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

# The unit tier alone (in-process, no child processes): seconds, with bus/ coverage.
unit: $(STAMP)
	$(BIN)/python -m pytest -q tests/unit --cov=bus --cov-report=term-missing:skip-covered

up: $(STAMP)
	$(BIN)/linebus up configs/demo.toml

bench: $(STAMP)
	$(BIN)/linebus bench

# Long coverage-guided fuzzing (atheris), FUZZ_TIME seconds per target (FUZZ_TARGETS: a subset),
# then the codec's property tests with the `long` hypothesis profile. Each target starts from its
# committed seeds (tests/fuzz/corpus/NAME, read only) plus what earlier runs found
# (var/fuzz/corpus/NAME, where new inputs go); a crash stops the run and is written to
# var/fuzz/crashes/NAME/. See docs/FUZZING.md. pytest's --timeout=0: the suite's 120 s per test
# would cut a long-profile test in the middle, which hypothesis reports as a flaky failure.
FUZZ_TIME ?= 60
FUZZ_TARGETS ?= $(shell $(PYTHON) -c "import sys; sys.path.insert(0, '.'); from tests.fuzz.targets import TARGETS; print(*TARGETS)")
fuzz: $(STAMP)
	@set -e; for target in $(FUZZ_TARGETS); do \
		mkdir -p var/fuzz/corpus/$$target var/fuzz/crashes/$$target; \
		echo "== fuzz $$target for $(FUZZ_TIME) s"; \
		$(BIN)/python -m tests.fuzz.run $$target -max_total_time=$(FUZZ_TIME) -print_final_stats=1 \
			-artifact_prefix=var/fuzz/crashes/$$target/ var/fuzz/corpus/$$target tests/fuzz/corpus/$$target; \
	done
	LINEBUS_HYPOTHESIS_PROFILE=long $(BIN)/python -m pytest -q -p no:cacheprovider --timeout=0 \
		tests/fuzz/test_codec_properties.py

clean:
	rm -rf $(VENV) .pytest_cache .coverage .coverage.*

# The two commands of the README: `make demo` and `make test`. Both set up .venv when missing,
# start the local Kafka broker when no bootstrap address is configured, and stop it afterwards.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
WITH_KAFKA := deploy/kafka/with-kafka
PYTEST_ARGS ?=

.PHONY: demo test test-unit lint install kafka-start kafka-stop clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required (found %s)" % sys.version.split()[0])'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test,bench]'
	@touch $@

demo: $(STAMP)
	$(WITH_KAFKA) $(BIN)/levydrift demo

test: $(STAMP) lint
	$(WITH_KAFKA) $(BIN)/python -m pytest $(PYTEST_ARGS)

test-unit: $(STAMP)
	$(BIN)/python -m pytest -m "not kafka" $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .

kafka-start:
	deploy/kafka/local-kafka start

kafka-stop:
	deploy/kafka/local-kafka stop

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info

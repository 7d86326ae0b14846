# The two commands of the README: `make demo` and `make test`. Both set up .venv when missing,
# start the local Kafka broker when no bootstrap address is configured, and stop it afterwards.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
LOCKS := deploy/requirements-dev.lock deploy/requirements-build.lock
WITH_KAFKA := deploy/kafka/with-kafka
PYTEST_ARGS ?=
PIP := $(BIN)/python -m pip --disable-pip-version-check

.PHONY: demo test test-unit lint install lock upgrade ops-tools kafka-start kafka-stop clean

install: $(STAMP)

# Exactly the locked versions, each checked against its hash, whatever PyPI serves today; then
# the project itself, resolving nothing. `pip check` proves the lock is a complete closure.
$(STAMP): pyproject.toml $(LOCKS) deploy/requirements.lock
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required (found %s)" % sys.version.split()[0])'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --require-hashes --no-deps $(addprefix -r ,$(LOCKS))
	$(PIP) install -q --no-deps --no-build-isolation -e .
	$(PIP) check
	@touch $@

# After changing dependencies in pyproject.toml: lock them (other pins stay), install, test.
lock:
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	deploy/ci/lock-requirements.sh
	$(MAKE) test

# Move every dependency to the newest version pyproject.toml allows, then install and test.
upgrade:
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	deploy/ci/lock-requirements.sh --upgrade
	$(MAKE) test

demo: $(STAMP)
	$(WITH_KAFKA) $(BIN)/levydrift demo

# The operations tests' tools are installed first when this user may (root, passwordless sudo);
# a run that had to skip tests for a missing tool ends with one line saying how to get them.
test: $(STAMP) lint
	@$(BIN)/python -m tests.deploy.tools ensure
	@status=0; $(WITH_KAFKA) $(BIN)/python -m pytest $(PYTEST_ARGS) || status=$$?; \
	  $(BIN)/python -m tests.deploy.tools report; exit $$status

test-unit: $(STAMP)
	$(BIN)/python -m pytest -m "not kafka" $(PYTEST_ARGS)

# mypy over the files pyproject.toml configures; the detectors and the schemas also strictly.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/mypy --strict detectors schemas

kafka-start:
	deploy/kafka/local-kafka start

kafka-stop:
	deploy/kafka/local-kafka stop

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info

# ThingLinks (Python). The two commands: `make run` and `make test` (see README.md).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q

.PHONY: run test test-fast lint typecheck migrations-check install install-test install-dev bench fuzz trial clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip

$(VENV)/.base.stamp: $(PY) requirements/base.txt requirements/edge.txt
	$(PIP) install -r requirements/base.txt
	@touch $@

$(VENV)/.test.stamp: $(VENV)/.base.stamp requirements/test.txt
	$(PIP) install -r requirements/test.txt
	@touch $@

$(VENV)/.dev.stamp: $(VENV)/.test.stamp requirements/dev.txt
	$(PIP) install -r requirements/dev.txt
	@touch $@

install: $(VENV)/.base.stamp
install-test: $(VENV)/.test.stamp
install-dev: $(VENV)/.dev.stamp

## Start everything in the foreground (web :8000, MQTT :11883, ingest, Celery worker and beat).
run: install
	$(PY) manage.py runplatform

## Install the test requirements and run the whole suite.
test: install-test
	$(PY) -m pytest $(PYTEST_ARGS)

## The fast suite (docs/testing.md): no processes, no browser (tests marked `slow` are left
## out, and one that starts a process fails), on TEST_WORKERS pytest-xdist workers.
TEST_WORKERS ?= 2
test-fast: install-test
	$(PY) -m pytest -m "not slow" -p tests.support.fast -n $(TEST_WORKERS) $(PYTEST_ARGS)

# mypy's Django plugin and manage.py load the settings, which refuse to start without a secret
# key: these checks get a throwaway random one when the environment has none.
CHECK_KEY = DJANGO_SECRET_KEY="$${DJANGO_SECRET_KEY:-$$($(PY) -c 'import secrets; print(secrets.token_urlsafe(50))')}"

## Ruff, the layers and import cycles (import-linter, docs/architecture.md), then mypy.
lint: install-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	$(CHECK_KEY) $(VENV)/bin/mypy edge webapp config

migrations-check: install
	$(CHECK_KEY) $(PY) manage.py makemigrations --check --dry-run

## Benchmarks (see docs/performance.md); BENCH_ARGS=--small for a quick proof run.
bench: install-test
	$(PY) -m bench $(BENCH_ARGS)

## docker/compose.yml in containers with podman (root; docker/trial/run.sh): images built from
## docker/Dockerfile, every service healthy, device -> telemetry -> rule -> command through them.
trial: install-test
	bash docker/trial/run.sh

## Mutation fuzzing of every decoder of outside bytes (tests/security/fuzzing.py); CI runs it small.
FUZZ_CASES ?= 1000000
fuzz: install-test
	$(PY) -m tests.security.fuzzing --cases $(FUZZ_CASES)

clean:
	rm -rf var/test-redis .pytest_cache .mypy_cache .ruff_cache

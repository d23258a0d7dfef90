# flask-ssecors developer commands. Each command installs what it needs into .venv (created if
# missing; an editable install of this checkout plus extras from setup.cfg), then runs:
#   make demo   the serve extra (gunicorn, packaging): only what the example app needs
#   make test   the test, serve and docs extras (pytest, Playwright, mypy, ruff, build, twine,
#               redis, psycopg, Sphinx...), plus redis-server, chromium, nginx and postgresql
#               (tools/system-deps.sh);
#               runs lint, typing and the whole suite, as CI does
#   make test-fast  the same extras as make test; runs tests/unit only (no redis-server,
#               chromium or nginx needed)
#   make docs   the same as make test; builds the documentation
#   make bench  the bench extra (flask-sse, flask-cors, sse-starlette, uvicorn, redis,
#               matplotlib, py-spy...), plus redis-server; runs the benchmarks (quick mode;
#               BENCH_ARGS="--full" for all sizes)
#   make dist   the same as make test; builds the sdist and wheel into dist/ and checks them
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
API_PORT ?= 5000
PAGE_PORT ?= 5001
BENCH_ARGS ?= --quick

.PHONY: help venv system-deps demo test test-fast check lint typing docs bench dist clean

help:
	@echo "make demo   - run the example app under gunicorn with gevent workers (installs .[serve])"
	@echo "make test   - lint, typing and the whole test suite (installs .[test,serve,docs])"
	@echo "make test-fast - the unit tests only: no service needed (installs .[test,serve,docs])"
	@echo "make docs   - build the documentation, warnings are errors (installs .[test,serve,docs])"
	@echo "make bench  - run the benchmarks, quick mode (installs .[bench])"
	@echo "make dist   - build and check the sdist and wheel into dist/ (installs .[test,serve,docs])"

# One stamp per set of extras: each is installed once, and again when setup.cfg changes.
$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(VENV)/.installed: setup.cfg pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[test,serve,docs]'
	touch $@

$(VENV)/.installed-serve: setup.cfg pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[serve]'
	touch $@

$(VENV)/.installed-bench: setup.cfg pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[bench]'
	touch $@

venv: $(VENV)/.installed

system-deps:
	bash tools/system-deps.sh

# exec: gunicorn takes the recipe shell's place, so stopping make (by its PID, or Ctrl-C) stops it.
demo: $(VENV)/.installed-serve
	exec env API_PORT=$(API_PORT) PAGE_PORT=$(PAGE_PORT) $(VENV)/bin/gunicorn -c example_app/gunicorn.conf.py

lint: venv
	$(VENV)/bin/ruff check flask_ssecors tests example_app bench
	$(VENV)/bin/ruff format --check flask_ssecors tests example_app bench

typing: venv
	$(VENV)/bin/mypy

check: lint typing

test: venv system-deps check
	$(PY) -m pytest

test-fast: venv
	$(PY) -m pytest tests/unit

docs: venv
	$(VENV)/bin/sphinx-build -E -W -b html docs docs/_build/html

bench: $(VENV)/.installed-bench
	bash tools/system-deps.sh redis-server
	$(PY) -m bench $(BENCH_ARGS)

dist: venv
	rm -rf dist
	$(PY) -m build --outdir dist .
	$(PY) -m twine check --strict dist/*

clean:
	rm -rf $(VENV) build dist *.egg-info docs/_build .pytest_cache .mypy_cache .ruff_cache

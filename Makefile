# flask-ssecors developer commands. `make demo` serves the example app; `make test` sets up
# .venv (if missing) and runs the whole suite, as CI does.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
API_PORT ?= 5000
PAGE_PORT ?= 5001

.PHONY: help venv system-deps demo test check lint typing docs bench clean

help:
	@echo "make demo   - run the example app under gunicorn with gevent workers"
	@echo "make test   - set up .venv and run lint, typing and the whole test suite"
	@echo "make docs   - build the documentation (warnings are errors)"
	@echo "make bench  - run the benchmarks (quick mode)"

$(VENV)/.installed: setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,serve,docs]'
	touch $@

venv: $(VENV)/.installed

system-deps:
	bash tools/system-deps.sh

demo: venv
	API_PORT=$(API_PORT) PAGE_PORT=$(PAGE_PORT) $(VENV)/bin/gunicorn -c example_app/gunicorn.conf.py

lint: venv
	$(VENV)/bin/ruff check flask_ssecors tests example_app bench
	$(VENV)/bin/ruff format --check flask_ssecors tests example_app bench

typing: venv
	$(VENV)/bin/mypy

check: lint typing

test: venv system-deps check
	$(PY) -m pytest

docs: venv
	$(VENV)/bin/sphinx-build -E -W -b html docs docs/_build/html

bench: venv
	$(PY) -m bench --quick

clean:
	rm -rf $(VENV) build dist *.egg-info docs/_build .pytest_cache .mypy_cache .ruff_cache

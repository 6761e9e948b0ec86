# The README's first two commands. Each one (re)creates the virtualenv from scratch.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP_FLAGS ?= --quiet --disable-pip-version-check

.PHONY: demo test lint bench clean pin

demo:
	$(PYTHON) -m venv --clear $(VENV)
	$(PY) -m pip install $(PIP_FLAGS) -e ".[example]"
	$(PY) examples/demo.py

test:
	$(PYTHON) -m venv --clear $(VENV)
	$(PY) -m pip install $(PIP_FLAGS) -e ".[dev]"
	$(PY) -m pytest

# Benchmarks: a non-editable install (as users get it) plus DVC, the peer compared against.
bench:
	$(PYTHON) -m venv --clear .venv-bench
	.venv-bench/bin/python -m pip install $(PIP_FLAGS) ".[dev]" dvc gunicorn
	.venv-bench/bin/python benchmarks/bench.py

# Static checks CI runs after `make test` (uses the virtualenv `make test` built).
lint:
	$(PY) -m ruff check mlops_ci tests examples benchmarks
	$(PY) -m ruff format --check mlops_ci tests examples benchmarks
	$(PY) -m mypy
	$(VENV)/bin/actionlint .github/workflows/*.yml workflow-templates/*.yml
	$(VENV)/bin/zizmor --offline action.yml actions/*/action.yml workflow-templates/*.yml .github/workflows/*.yml
	$(VENV)/bin/check-jsonschema --builtin-schema vendor.github-workflows workflow-templates/*.yml .github/workflows/*.yml
	$(VENV)/bin/check-jsonschema --builtin-schema vendor.github-actions action.yml actions/*/action.yml
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --site-dir build/site

clean:
	rm -rf $(VENV) .venv-bench build *.egg-info .pytest_cache .mypy_cache .ruff_cache

# Point the starter workflows at the actions of commit REF (after a release tag; docs/releasing.md).
pin:
	$(PY) -m mlops_ci.scaffold --pin $(REF)

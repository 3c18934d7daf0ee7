# ctflow — two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DEVSTAMP := $(VENV)/.installed-dev

.PHONY: demo test lint typecheck pytest bench docs clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# the library and its pictures (what `make demo` needs: the core + the [viz] extra)
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e ".[viz]"
	touch $(STAMP)

# + test/lint tools and the peers (torch CPU 2.13.0, MONAI, TorchIO) for interop tests and benchmarks
$(DEVSTAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e ".[dev,bench,seg]"
	touch $(STAMP) $(DEVSTAMP)

demo: $(STAMP)
	$(VENV)/bin/ctflow demo --out demo_output

lint: $(DEVSTAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

typecheck: $(DEVSTAMP)
	$(VENV)/bin/mypy

pytest: $(DEVSTAMP)
	$(PY) -m pytest -q

test: lint typecheck pytest

bench: $(DEVSTAMP)
	$(PY) -m benchmarks.run

docs: $(DEVSTAMP)
	$(VENV)/bin/mkdocs build --strict -d site

clean:
	rm -rf $(VENV) demo_output site tutorial_output .pytest_cache .mypy_cache .ruff_cache

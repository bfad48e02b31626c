# Two entry points on a fresh machine: `make run` (main job) and `make test` (whole suite).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
OUT ?= out

.PHONY: install run test clean

install: $(VENV)/.installed

# torch==2.13.0 is pinned first so pip never pulls a different build: on CPU-only machines it is the
# CPU wheel; for CUDA see the README ("GPU route"). --no-cache-dir: a one-shot install gains nothing
# from a second copy of every wheel in pip's cache, and the disk may be nearly full.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --no-cache-dir --upgrade pip
	$(PY) -m pip install -q --no-cache-dir torch==2.13.0
	$(PY) -m pip install -q --no-cache-dir -e '.[test]'
	touch $@

run: install
	$(VENV)/bin/genfoundry tour -o $(OUT)

test: install
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) $(OUT)

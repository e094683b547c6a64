# Two entry points on a fresh machine:  `make quickstart`  and  `make test`.
# Both create .venv and install the CPU lock file (torch pinned to the CPU build) on first use.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.k15-installed

# glibc's default allocator page-faults heavily on CPU inference (see ../shared/calibration.md).
export MALLOC_MMAP_THRESHOLD_ := 33554432
export MALLOC_TRIM_THRESHOLD_ := 1073741824

.PHONY: setup quickstart test test-slow clean

$(STAMP): requirements/cpu.lock setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements/cpu.lock
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

setup: $(STAMP)

quickstart: $(STAMP)
	$(PY) -m experiments.run quickstart

test: $(STAMP)
	$(PY) -m pytest -q

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

clean:
	rm -rf $(VENV) runs

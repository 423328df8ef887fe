# cryoscape: `make demo` and `make test` work on a fresh machine (they create .venv first).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test test-fast venv clean

venv: $(STAMP)

# torch==2.13.0 first (a CPU build); then the package with a constraint that keeps that torch.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	echo "torch==2.13.0" > $(VENV)/constraints.txt
	$(PY) -m pip install -q -c $(VENV)/constraints.txt -e '.[test,demo]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/cryoscape demo

# The whole suite, slow end-to-end tests included.
test: $(STAMP)
	RUN_SLOW=1 $(PY) -m pytest -q

# The fast default set (slow tests skipped).
test-fast: $(STAMP)
	$(PY) -m pytest -q

clean:
	rm -rf demo_out .pytest_cache

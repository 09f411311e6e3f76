# qwen3jax: every target installs what it needs first, so a fresh machine needs only `make run` / `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
EXP ?= pretrain_s1
ARGS ?=
WORKDIR ?= runs/$(EXP)
PYTEST_ARGS ?=

.PHONY: install test test-fast run bench clean-venv

install: $(STAMP)

# Re-install only when the declared dependencies change.
$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

test: install
	$(PY) -m pytest -n 2 $(PYTEST_ARGS)

test-fast: install
	$(PY) -m pytest -n 2 -m "not slow" $(PYTEST_ARGS)

run: install
	$(PY) -m qwen3jax.run --config=experiments/$(EXP).py $(ARGS) --workdir=$(WORKDIR)

bench: install
	$(PY) -m qwen3jax.bench

clean-venv:
	rm -rf $(VENV)

# Two commands on a fresh machine: `make run` and `make test`. Only Python >= 3.11 is needed.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
ARGS ?=

.PHONY: run test lint migrate bench chaos chaos-ha clean

$(VENV)/.installed: requirements.txt requirements-dev.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python >= 3.11 is required")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	@touch $@

run: $(VENV)/.installed
	$(PY) portfolio_manager.py live $(ARGS)

test: $(VENV)/.installed lint
	$(PY) -m pytest $(ARGS)

# The configured checks, run on every `make test` (ruff: pyproject.toml; mypy: strict on core/).
lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

migrate: $(VENV)/.installed
	$(PY) portfolio_manager.py migrate $(ARGS)

clean:
	rm -rf $(VENV)

bench: $(VENV)/.installed
	$(PY) -m bench.run $(if $(QUICK),--quick,)

# A pair's failover time (leader SIGKILL → standby ready, TTL 5000 and 2000 ms) and the
# fence's cost (single daemon vs pair leader, same load, same server). QUICK=1: a few minutes.
.PHONY: bench-ha
bench-ha: $(VENV)/.installed
	$(PY) -m bench.ha $(if $(QUICK),--quick,)

chaos: $(VENV)/.installed
	$(PY) -m tests.chaos.campaign --broker both --crashes $(or $(CRASHES),200) $(if $(SEED),--seed $(SEED),)

chaos-ha: $(VENV)/.installed
	$(PY) -m tests.chaos.ha_campaign --events $(or $(EVENTS),100) $(if $(SEED),--seed $(SEED),)

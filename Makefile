# Two commands for a fresh clone: `make demo` (install + run the offline demo study) and
# `make test` (install + run the tests). Everything installs into .venv.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SNAKEMAKE := $(VENV)/bin/snakemake
CORES ?= $(shell nproc 2>/dev/null || echo 2)

.PHONY: install demo test lint format clean-demo

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	touch $@

demo: install
	$(SNAKEMAKE) --cores $(CORES)
	@echo "Figures: results/demo/figures/randomize/  Tables: results/demo/tables/randomize/"

test: install
	$(PY) -m pytest

lint: install
	$(SNAKEMAKE) --lint
	$(VENV)/bin/snakefmt --check Snakefile workflow/rules

format: install
	$(VENV)/bin/snakefmt Snakefile workflow/rules

clean-demo:
	rm -rf results/demo

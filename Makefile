# Two commands for a fresh clone: `make demo` (install + run the offline demo study) and
# `make test` (install + run the tests). Everything installs into .venv.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SNAKEMAKE := $(VENV)/bin/snakemake
CORES ?= $(shell nproc 2>/dev/null || echo 2)

.PHONY: install demo test lint format clean-demo gpu-check

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

# On a machine with an NVIDIA GPU: GPU tests, a study on the GPU against the CPU in every
# precision, the ResNet-50 benchmark; writes docs/gpu_check.json and docs/gpu_check.md. Uses the
# Python it finds (GPU_PYTHON), with no install step: torch & co. are usually there already.
GPU_PYTHON ?= python3
gpu-check:
	$(GPU_PYTHON) benchmarks/gpu_check.py --out docs

# Two commands for a fresh clone: `make demo` (install + run the offline demo study) and
# `make test` (install + run the tests). Everything installs into .venv.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SNAKEMAKE := $(VENV)/bin/snakemake
CORES ?= $(shell nproc 2>/dev/null || echo 2)

# The environment is the lock file's: exact versions with their sha256 (Linux x86-64, CPython
# 3.11 to 3.13, where the lock installs: pyproject's requires-python, checked first; elsewhere
# `pip install -e ".[test]"` takes pyproject's ranges). Another interpreter: make demo PYTHON=python3.12
# Without pip's cache: torch's CUDA wheels would otherwise stay on disk twice (~3 GB more; a CI
# run once failed with "No space left on device" while installing).
LOCK := requirements/lock.txt
UV := uv==0.13.9

.PHONY: install demo lm-demo test test-all lint format clean-demo gpu-check lock docs demo-check config-docs demo-zoo

install: $(VENV)/.installed

$(VENV)/.installed: $(LOCK) pyproject.toml
	$(PYTHON) -m tools.check_python
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --no-cache-dir --require-hashes --no-deps -r $(LOCK)
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	$(PY) -m pip check
	touch $@

# Re-resolve pyproject's ranges to the newest releases (within requirements/constraints.in) and
# write the lock and the conda environment generated from it; commit both.
lock:
	$(PYTHON) -m venv .venv-lock
	.venv-lock/bin/pip install --quiet $(UV)
	.venv-lock/bin/uv pip compile --quiet --upgrade --generate-hashes --extra test --python-version 3.11 \
		--python-platform x86_64-manylinux_2_28 --constraint requirements/constraints.in \
		--output-file $(LOCK) pyproject.toml
	$(PYTHON) -m tools.conda_env $(LOCK) envs/layercrit.yaml

demo: install
	$(SNAKEMAKE) --cores $(CORES)
	@echo "Figures: results/demo/figures/randomize/  Tables: results/demo/tables/randomize/"

# Test files run in parallel, one worker per core (files stay whole: their fixtures are shared),
# longest first (tests/conftest.py orders them); the 30 slowest tests are listed at the end.
# test-all adds the rehearsals (pyproject's markers).
PYTEST := $(PY) -m pytest -n auto --dist loadfile --no-loadscope-reorder --durations=30

test: install
	$(PYTEST)

test-all: install
	$(PYTEST) -m ""

lint: install
	$(SNAKEMAKE) --lint
	$(VENV)/bin/snakefmt --check Snakefile workflow/rules

format: install
	$(VENV)/bin/snakefmt Snakefile workflow/rules

# The offline language-model demo (README, "The offline language-model demo"): tiny Llamas trained
# by the workflow on generated text, fetched from resources/lm_demo_zoo/.
lm-demo: install
	$(SNAKEMAKE) --cores $(CORES) --configfile config/lm_demo.yaml
	@echo "Figures: results/lm_demo/figures/randomize/  Tables: results/lm_demo/tables/randomize/"

clean-demo:
	rm -rf results/demo

# The README's demo numbers: run the demo on a clean results/demo (timed), copy its tables to
# docs/demo/ and its heatmap to docs/demo_heatmap.png, and rewrite the README's demo block.
docs: install
	$(PY) -m tools.demo_docs run

# Retrain the demo zoo from its recipes (config/demo_training.yaml: tens of minutes on 2 cores),
# ship the checkpoints to resources/demo_zoo/ and record their sha256 in config/zoo/demo.yaml;
# then `make docs`. Commit the three together.
demo-zoo: install
	$(PY) -m tools.demo_zoo train

# config/README.md from the schemas' descriptions (a test checks it is current).
config-docs: install
	$(PY) -m tools.config_docs

# The demo afresh (into results/demo_check), its tables against docs/demo/ (make test runs the same,
# as tests/test_demo_run.py).
demo-check: install
	$(PY) -m tools.demo_docs check-run

# On a machine with an NVIDIA GPU: GPU tests, a study on the GPU against the CPU in every
# precision, the ResNet-50 benchmark; writes docs/gpu_check.json and docs/gpu_check.md. Uses the
# Python it finds (GPU_PYTHON), with no install step: torch & co. are usually there already, and
# src/ on PYTHONPATH stands for the project.
GPU_PYTHON ?= python3
gpu-check:
	PYTHONPATH=src$${PYTHONPATH:+:$$PYTHONPATH} $(GPU_PYTHON) -m tools.gpu_check --out docs

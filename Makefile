# pico_lightning: `make help` lists the targets. `make demo` and `make test` install first.
# Python 3.10 or newer. An active virtual environment ($VIRTUAL_ENV) is used as it is. With none active, a system
# Python that refuses pip installs (PEP 668: Debian 12, Ubuntu 24.04) gets a project environment, .venv, made from it;
# any other python3 (pyenv, conda, a container's) is used as it is. PYTHON=/path/to/python picks one yourself.
BASE_PYTHON ?= python3
VENV := .venv
ifeq ($(origin PYTHON),undefined)
EXTERNALLY_MANAGED := $(if $(VIRTUAL_ENV),,$(shell $(BASE_PYTHON) -c "import os, sys, sysconfig; \
	print(sys.prefix == sys.base_prefix and os.path.isfile(os.path.join(sysconfig.get_path('stdlib'), \
	'EXTERNALLY-MANAGED')) or '')" 2>/dev/null))
PYTHON := $(if $(EXTERNALLY_MANAGED),$(VENV)/bin/python,$(BASE_PYTHON))
endif
PIP := $(PYTHON) -m pip
TORCH := torch==2.13.0
STAMP := .make/install.stamp
DEMO_DIR ?= outputs/demo
PYTEST := $(PYTHON) -m pytest -q -p no:cacheprovider

.PHONY: help install demo test test-slow test-full test-cluster lint bench bench-gpu clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

install: $(STAMP)  ## install torch (CPU wheel, pinned) first, then pico_lightning with [dev] at the versions of constraints.txt

$(STAMP): setup.cfg pyproject.toml constraints.txt $(filter $(VENV)/bin/python,$(PYTHON))
	$(PIP) install -q $(TORCH)
	$(PIP) install -q -e ".[dev]" -c constraints.txt
	@mkdir -p $(@D) && touch $@

# Debian and Ubuntu ship venv's pip (ensurepip) apart, in python3-venv: say so rather than install system packages
$(VENV)/bin/python:
	@$(BASE_PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 10))' || \
		{ echo "make: pico_lightning needs Python 3.10 or newer; $(BASE_PYTHON) is $$($(BASE_PYTHON) -V)" >&2; exit 1; }
	@$(BASE_PYTHON) -c 'import ensurepip' 2>/dev/null || \
		{ echo "make: $(BASE_PYTHON) cannot make $(VENV) (no ensurepip): sudo apt install python3-venv" >&2; exit 1; }
	$(BASE_PYTHON) -m venv $(VENV)

demo: install  ## the main job, offline on CPU: data, tiny training, seed-scored evaluation
	$(PYTHON) -m pico_lightning.demo --experiment experiments/demo.yaml --out $(DEMO_DIR)

test: install  ## the fast suite (skips `slow`, `gpu` and `slurm`)
	$(PYTEST) -m "not slow and not gpu and not slurm"

test-slow: install  ## only what `make test` skips for time: the multi-process and long tests (`slow`), as CI runs them
	$(PYTEST) -m "slow and not gpu and not slurm"

test-full: install  ## everything but `gpu` and `slurm`, the multi-process and long tests included
	$(PYTEST) -m "not gpu and not slurm"

# as root: installs slurm-wlm + munge if absent, starts a one-node SLURM, runs tests/cluster, stops what it started
# the jobs run `pico` from PATH: the project environment's, when make made one
test-cluster: install  ## the cluster tests against a real two-node SLURM on this host
	bash tests/cluster/slurm.sh up
	PATH="$(if $(EXTERNALLY_MANAGED),$(CURDIR)/$(VENV)/bin:)$$PATH" $(PYTEST) -m slurm tests/cluster; status=$$?; \
		bash tests/cluster/slurm.sh down; exit $$status

lint: install  ## ruff check + format check
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .

bench: install  ## the benchmark harness on the CPU, tiny model: prints a table, writes bench/results.json
	$(PYTHON) -m bench.gpu --tiny --out bench/results.json

# bench-gpu does not run `install`: that pins the CPU wheel of torch, and a GPU machine keeps its own CUDA torch
bench-gpu:  ## one CUDA GPU, full-size FLUX.1-Fill: step, memory, MFU, inference -> bench/gpu_results.json, README's table
	$(PYTHON) -m bench.gpu
	$(PYTHON) -m bench.readme_table bench/gpu_results.json

clean:  ## remove build and demo outputs
	rm -rf .make build dist *.egg-info outputs

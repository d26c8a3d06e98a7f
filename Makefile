# Two entry points (see README): `make demo` and `make test`. Both build .venv on first
# use; torch goes in first so that nothing else pulls a different (CUDA) build.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP_QUIET := -q --disable-pip-version-check

.PHONY: demo test venv clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(VENV)/.torch: | $(PY)
	bash scripts/install_torch.sh $(PY)
	touch $@

$(VENV)/.installed: pyproject.toml setup.py core_ops/_native/kernels.c $(VENV)/.torch
	$(PY) -m pip install $(PIP_QUIET) -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml setup.py $(VENV)/.installed
	$(PY) -m pip install $(PIP_QUIET) -e '.[test]'
	touch $@

venv: $(VENV)/.installed

demo: $(VENV)/.installed
	$(PY) -m gradcv.experiments.bench_sobel batch_sizes=[1,4,16] repetitions=30

test: $(VENV)/.installed-test
	$(PY) -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) outputs multirun .pytest_cache

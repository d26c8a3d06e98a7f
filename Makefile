# Three entry points (see README): `make demo`, `make test` and `make bench`. All build .venv on first
# use; torch goes in first so that nothing else pulls a different (CUDA) build.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP_QUIET := -q --disable-pip-version-check

.PHONY: demo bench test venv clean

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

# The registration study on the bundled pair (a few seconds): Figure 3, metrics.json and
# homography.json in outputs/register/<date>/<time>/.
demo: $(VENV)/.installed
	$(PY) -m gradcv.experiments.register

# The benchmarks, each against its references (OpenCV, scikit-image, SciPy, Pillow,
# Kornia: the bench extra), one after the other so that they do not share the cores;
# each writes its CSV, figures and metrics.json in outputs/<benchmark>/<date>/<time>/.
# Tens of minutes with the defaults; one of them: make bench BENCHMARKS=bench_ssim.
BENCHMARKS ?= bench_sobel bench_filters bench_warp bench_ssim bench_ransac bench_registration bench_depth_warp bench_depth bench_features

$(VENV)/.installed-bench: pyproject.toml setup.py $(VENV)/.installed
	$(PY) -m pip install $(PIP_QUIET) -e '.[bench]'
	touch $@

bench: $(VENV)/.installed-bench
	set -e; for app in $(BENCHMARKS); do $(PY) -m gradcv.experiments.$$app; done

test: $(VENV)/.installed-test
	$(PY) -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) outputs multirun .pytest_cache

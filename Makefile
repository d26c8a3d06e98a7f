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

# The main job: the paper's studies at reduced size (Figure 2 Sobel benchmark, Figure 3
# registration, Figure 4 depth, Figure 5 attack) in one run folder with a one-page summary
# (summary.html, summary.md, summary.png) in outputs/demo/<date>/<time>/, OpenCV and Kornia
# beside gradcv (the bench extra): a few minutes on two cores.
demo: $(VENV)/.installed-bench
	$(PY) -m gradcv.experiments.demo

# The benchmarks, each against its references (OpenCV, scikit-image, SciPy, Pillow,
# Kornia: the bench extra), one after the other so that they do not share the cores;
# each writes its CSV, figures and metrics.json in outputs/<benchmark>/<date>/<time>/.
# Tens of minutes with the defaults; one of them: make bench BENCHMARKS=bench_ssim.
BENCHMARKS ?= bench_sobel bench_filters bench_warp bench_ssim bench_ransac bench_registration bench_depth_warp bench_depth bench_features bench_attack

$(VENV)/.installed-bench: pyproject.toml setup.py $(VENV)/.installed
	$(PY) -m pip install $(PIP_QUIET) -e '.[bench]'
	touch $@

bench: $(VENV)/.installed-bench
	set -e; for app in $(BENCHMARKS); do $(PY) -m gradcv.experiments.$$app; done

test: $(VENV)/.installed-test
	$(PY) -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) outputs multirun .pytest_cache

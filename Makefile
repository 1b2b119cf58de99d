# kdvision — every target is idempotent and works on a fresh machine (no .venv, no pip cache).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3
SUBPACKAGES := core classification segmentation detection pretraining tools
STAMP := $(VENV)/.kdvision-installed
export PIP_CONSTRAINT := $(CURDIR)/constraints.txt
export PIP_BUILD_CONSTRAINT := $(CURDIR)/constraints.txt
export PIP_DISABLE_PIP_VERSION_CHECK := 1
DATA ?= $(abspath ../shared/data)

.PHONY: install demo test test-quick test-gpu bench bench-gpu dist clean visdom-assets

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt $(addsuffix /pyproject.toml,$(SUBPACKAGES))
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade "pip>=23" "setuptools<81" wheel
	$(PY) -m pip install $(addprefix -e ,$(SUBPACKAGES)) -e ".[dev,visdom]"
	@touch $(STAMP)

demo: install
	$(PY) classification/demo.py --output runs/demo

# The Visdom server's JavaScript, CSS and fonts from the npm registry (pinned, verified), so that dashboards work
# offline (docs/dashboards.md); nothing is fetched when they are already in place.
visdom-assets: install
	$(PY) tools/visdom_assets.py

# Tests run single-threaded (OMP_NUM_THREADS=1: the same numbers on every machine) in TEST_WORKERS processes, one
# test file per process (module fixtures such as trained teachers are built once), the heaviest files first
# (tests/conftest.py HEAVY; xdist would otherwise start with the files that hold the most tests).
TEST_WORKERS ?= 2
PYTEST := KDV_DATA=$(DATA) OMP_NUM_THREADS=1 $(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

test: install
	$(PYTEST)

test-quick: install
	$(PYTEST) -m "not slow and not gpu"

test-gpu: install
	KDV_DATA=$(DATA) $(PY) -m pytest -q -m gpu

bench: install
	$(PY) benchmarks/bench_dfad.py
	$(PY) benchmarks/bench_datafree.py --quick

# Every GPU measurement in one process within BENCH_BUDGET seconds (parts that no longer fit are skipped and
# recorded); results in runs/bench-gpu/bench_gpu.{json,md}. `--device cpu --smoke` tries it without a GPU.
BENCH_BUDGET ?= 480
bench-gpu: install
	$(PY) benchmarks/bench_gpu.py --device cuda --budget-s $(BENCH_BUDGET) --out-dir runs/bench-gpu

# One wheel per distribution (the six subpackages and the meta-package), each with its own version, built by
# poetry-core in pip's isolated build environment. Needs only pip: no `make install` (no torch) required.
# $(DIST) is rebuilt from scratch, so stale wheels of other versions never linger.
DIST ?= dist
dist:
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	rm -rf "$(DIST)"
	$(PY) -m pip wheel --no-deps --no-cache-dir -q -w "$(DIST)" $(addprefix ./,$(SUBPACKAGES)) .
	@ls -l "$(DIST)"/*.whl

clean:
	rm -rf $(VENV) runs .pytest_cache

# lossweave: the two commands a fresh machine needs are `make demo` and `make test`.
VENV      ?= .venv
PY        := $(VENV)/bin/python
PIP       := $(PY) -m pip --disable-pip-version-check
BACKENDS  ?= tensorflow jax torch
PYTEST_ARGS ?= -q -n 2 -p no:cacheprovider
DEMO_BACKEND ?= jax
OUT       ?= runs/demo

.PHONY: demo test bench bench-multitask bench-classes clean

$(PY):
	python3 -m venv $(VENV)

# The demo needs one backend (JAX), installed at the pinned versions.
$(VENV)/.demo-installed: pyproject.toml requirements/pins.txt | $(PY)
	$(PIP) install -q -c requirements/pins.txt keras jax jaxlib numpy scikit-learn matplotlib setuptools
	$(PIP) install -q --no-deps --no-build-isolation -e .
	touch $@

# Tests need all three backends and the test tools, every version pinned.
$(VENV)/.test-installed: pyproject.toml requirements/pins.txt | $(PY)
	$(PIP) install -q -r requirements/pins.txt
	$(PIP) install -q --no-deps --no-build-isolation -e .
	touch $@ $(VENV)/.demo-installed

demo: $(VENV)/.demo-installed
	KERAS_BACKEND=$(DEMO_BACKEND) $(VENV)/bin/lossweave train --out $(OUT)

# Two xdist workers on two cores: one thread each (oversubscribed PyTorch threads
# made small matmuls ~100x slower here).
test: $(VENV)/.test-installed
	@set -e; for b in $(BACKENDS); do \
		echo "=== KERAS_BACKEND=$$b"; \
		OMP_NUM_THREADS=1 KERAS_BACKEND=$$b $(PY) -m pytest $(PYTEST_ARGS); \
	done

bench: $(VENV)/.test-installed
	@set -e; for b in $(BACKENDS); do \
		echo "=== KERAS_BACKEND=$$b"; \
		KERAS_BACKEND=$$b $(PY) benchmarks/run.py; \
	done

# The multi-task quality (every strategy x 3 seeds x 2 cases, Delta_m%): long, so
# opt-in and on JAX only (the step times of every backend are in `make bench`).
bench-multitask: $(VENV)/.test-installed
	KERAS_BACKEND=jax $(PY) benchmarks/run.py --only multitask --out runs/bench/multitask.json

# ArcFace at 100k, 1M and 4M classes, full term against sample_rate=0.1, and the
# per-device table under a 2 x 2 mesh (JAX; ~20 minutes and ~8 GB at 4M): opt-in.
bench-classes: $(VENV)/.test-installed
	KERAS_BACKEND=jax $(PY) benchmarks/classes.py --out runs/bench/classes.json

clean:
	rm -rf $(VENV) runs .pytest_cache

# Two commands a new user needs:  `make quickstart`  and  `make test`.
# Both set up a virtualenv in .venv (this package and its dependencies from
# pyproject.toml / requirements*.txt) and the offline Fashion-MNIST (Debian's
# dataset-fashion-mnist) first, if missing; `make test` also Debian's slurm-wlm.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The exact versions the quickstart and the tests install (make lock remakes it).
LOCK := requirements-lock.txt
FASHION_MNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
SLURM := /usr/sbin/slurmctld
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup data quickstart test lock clean device-payload

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-lock.txt pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { \
	  echo "error: nin_jax needs Python >= 3.11 ($(PYTHON) is $$($(PYTHON) -V 2>&1)); run e.g. 'make PYTHON=python3.12 ...', or make one with 'pip install uv && uv venv --python 3.12 $(VENV)'"; exit 2; }
	[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c $(LOCK) -e .
	touch $@

data: $(FASHION_MNIST)

$(FASHION_MNIST):
	$(SUDO) apt-get update -q
	$(SUDO) apt-get install -y -q dataset-fashion-mnist

# Trains the paper's MNIST NIN on the real Fashion-MNIST, offline, on the CPU.
quickstart: setup data
	$(PY) experiments/fashion_mnist.py --workdir=workdirs/quickstart

# A real one-node SLURM for tests/test_slurm.py (docs/install.md's sbatch script).
$(SLURM):
	$(SUDO) apt-get update -q
	$(SUDO) apt-get install -y -q slurm-wlm

# The `test` extra (pytest, a local GCS server, the `tfds` extra) and the `torch`
# extra (the benchmark's PyTorch peer, the CPU build on Python 3.11).
$(VENV)/.installed-test: $(VENV)/.installed requirements-test.txt requirements-tfds.txt requirements-torch.txt
	$(PY) -m pip install -q -c $(LOCK) -e '.[test,torch]'
	touch $@

# Remakes requirements-lock.txt from the ranges in requirements*.txt (uv caches the
# package's own metadata by pyproject.toml alone, hence the refresh): the runtime
# and test sets (torch is pinned in its own extra) for the main lane, Python 3.11.
lock:
	[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q uv
	$(VENV)/bin/uv pip compile pyproject.toml --extra test --python-version 3.11 --refresh-package nin-jax \
	  --no-header --quiet --output-file $(LOCK).new
	{ echo '# The exact versions of the main lane (Python 3.11): the runtime and test sets,'; \
	  echo '# torch aside (pinned in its own extra). Made by `make lock`; do not edit.'; \
	  cat $(LOCK).new; } > $(LOCK) && rm $(LOCK).new

test: setup data $(SLURM) $(VENV)/.installed-test
	$(PY) -m pytest -q tests

# What benchmarks/device_run.sh carries to a lent GPU: .whl/ and .data/fashion-mnist/
# (docs/benchmarks.md#gpu). Needs PyPI and Debian's dataset-fashion-mnist.
device-payload: data
	PYTHON=$(PYTHON) benchmarks/device_payload.sh

clean:
	rm -rf workdirs

# Two commands a new user needs:  `make quickstart`  and  `make test`.
# Both set up a virtualenv in .venv (pip requirements + this package) and the
# offline Fashion-MNIST (Debian's dataset-fashion-mnist) first, if missing.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
FASHION_MNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup data quickstart test clean

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

data: $(FASHION_MNIST)

$(FASHION_MNIST):
	$(SUDO) apt-get update -q
	$(SUDO) apt-get install -y -q dataset-fashion-mnist

# Trains the paper's MNIST NIN on the real Fashion-MNIST, offline, on the CPU.
quickstart: setup data
	$(PY) experiments/fashion_mnist.py --workdir=workdirs/quickstart

# The tests also check the PyTorch peer of the benchmark (CPU wheel, benchmark-only).
$(VENV)/.installed-bench: $(VENV)/.installed benchmarks/requirements-torch.txt
	$(PY) -m pip install -q -r benchmarks/requirements-torch.txt
	touch $@

test: setup data $(VENV)/.installed-bench
	$(PY) -m pytest -q tests

clean:
	rm -rf workdirs

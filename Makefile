# Everything a new machine needs is behind these targets: `make sweep` and `make test`
# create .venv and install the project on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Extra overrides for the sweep, e.g. ARGS="data=fashion_mnist data.root=/path/to/data"
ARGS ?=

.PHONY: install sweep demo test test-all lint format tensorboard clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e '.[dev]'
	$(PY) -c "import torch, torchvision, lightning, hydra; print('installed: torch', torch.__version__, 'torchvision', torchvision.__version__)"
	touch $@

sweep: install  ## the comparison: LeNet-5 with and without BN at batch sizes 32, 64, 128
	$(PY) train.py -m model=lenet5 bn=true,false batch_size=32,64,128 $(ARGS)

demo: install  ## a two-minute version of the sweep on 5,000 images for 2 epochs
	$(PY) train.py -m model=lenet5 bn=true,false batch_size=32,64,128 epochs=2 data.limit_train=5000 $(ARGS)

test: install  ## the test suite (slow tests excluded)
	$(PY) -m pytest -q

test-all: install  ## every test, slow ones included
	$(PY) -m pytest -q -m ''

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

tensorboard: install
	$(VENV)/bin/tensorboard --logdir outputs

clean:  ## removes the virtual environment and caches, never outputs/
	rm -rf $(VENV) .pytest_cache .ruff_cache src/*.egg-info

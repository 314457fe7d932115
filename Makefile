# Two commands do all the set-up on a fresh machine (README "Quick start"):
#   make demo   - teacher in, student out, report (the main job, on the embedded MNIST data)
#   make test   - the test suite (what CI runs)
# The virtual environment is built on first use. CPU installs pin torch==2.13.0 (an unpinned torch
# pulls a multi-GB CUDA build); GPU users: `pip install -e ".[dev,diffusers]"` into an env with your own torch.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.fewstep-installed
PYTEST_ARGS ?=

.PHONY: demo test test-fast lint setup clean-venv browser

$(STAMP): pyproject.toml constraints-cpu.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints-cpu.txt torch==2.13.0
	$(PY) -m pip install --quiet -c constraints-cpu.txt -e ".[dev,diffusers,serve]"
	$(MAKE) --no-print-directory browser
	touch $(STAMP)

# The playground's test drives a real headless Chromium: Debian's chromium + chromedriver, installed
# here when missing and apt-get can (root); elsewhere install them yourself or the browser test skips.
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	else echo "note: chromium/chromedriver missing and apt-get unavailable: the browser test will skip"; fi

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/fewstep demo

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks

test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

clean-venv:
	rm -rf $(VENV)

# The two commands: `make run` (the whole study on the default data) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STUDY ?= study
RUN_ARGS ?=
# The default data and offline ImageNet weights (the command line reads the variables; tests require them)
CATSDOGS_DEFAULT_SOURCE ?= $(abspath ../shared/data/dogs-vs-cats-train-5000.zip)
CATSDOGS_WEIGHTS ?= $(abspath ../shared/weights/keras)
run test test-fast bench: export CATSDOGS_DEFAULT_SOURCE := $(CATSDOGS_DEFAULT_SOURCE)
run test test-fast bench: export CATSDOGS_WEIGHTS := $(CATSDOGS_WEIGHTS)

.PHONY: run test test-fast lint install install-test browser bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install -q -e ".[serve,lite,audit,engines]"

# torch only checks EfficientNet-Lite's converted weights against a PyTorch forward pass (pinned: the
# CPU wheel; an unpinned torch would pull the CUDA build). Those tests skip when it cannot be installed.
install-test: $(BIN)/python
	$(BIN)/pip install -q -e ".[serve,lite,export,audit,engines,mlflow,test]"
	$(BIN)/pip install -q torch==2.13.0 || echo "warning: torch not installed; PyTorch parity tests will skip"

# Debian's Chromium + ChromeDriver for the browser tests (no browser download at run time).
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
	    || echo "warning: could not install chromium; browser tests will be skipped"; }

run: install
	$(BIN)/catsdogs reproduce --out $(STUDY) $(RUN_ARGS)

# pytest-xdist: one worker per core, each running whole files (their module fixtures are built once)
test: install-test browser
	$(BIN)/python -m pytest -q -n auto --dist loadfile --no-loadscope-reorder

# Lint and import order (ruff, configured in pyproject.toml); CI runs it before the tests.
lint: install-test
	$(BIN)/ruff check src tests benchmarks scripts

# The quick loop while working: no browser, no pretrained backbones or whole studies (under a minute).
test-fast: install-test
	$(BIN)/python -m pytest -q -n auto --dist loadfile --no-loadscope-reorder -m "not slow and not browser"

bench: install
	$(BIN)/catsdogs bench

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache

# Two entry points for a newcomer: `make demo` (the main job) and `make test`.
# Each creates the virtual environment .venv on first use.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed

.PHONY: demo test nightly system-deps clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[export,dev]'
	touch $(STAMP)

# Debian's chromium + chromedriver for the web UI's browser test (installed when missing; needs root).
system-deps:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	else echo "install Debian's chromium and chromium-driver (sudo apt-get install chromium chromium-driver)"; exit 1; fi

demo: $(STAMP)
	$(BIN)/orchestrator export

test: system-deps $(STAMP)
	$(BIN)/python -m pytest -q

nightly: $(STAMP)
	$(BIN)/python -m pytest -q -m nightly

clean:
	rm -rf $(VENV) model_repository/*/ model_repository/variants.json

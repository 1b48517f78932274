# Two entry points for a newcomer: `make demo` (the main job) and `make test`.
# Each creates the virtual environment .venv on first use.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed

.PHONY: demo test nightly compile system-deps clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[export,dev]'
	touch $(STAMP)

# Debian packages the tests use, installed when missing (needs root): chromium + chromedriver for the
# web UI's browser test, docker-compose (client only) to validate deploy/ compose files, gcc for
# `make compile`, iproute2 (ip, tc) for the chaos benchmark's network namespaces, dnsmasq (dnsmasq-base)
# as the DNS server of the node-discovery tests.
system-deps:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null && command -v docker-compose >/dev/null \
		&& command -v gcc >/dev/null && command -v ip >/dev/null && command -v tc >/dev/null \
		&& command -v dnsmasq >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver docker-compose gcc iproute2 dnsmasq-base >/dev/null; \
	else echo "install Debian's chromium, chromium-driver, docker-compose, gcc, iproute2 and dnsmasq-base (sudo apt-get install chromium chromium-driver docker-compose gcc iproute2 dnsmasq-base)"; exit 1; fi

demo: $(STAMP)
	$(BIN)/orchestrator demo

# mypyc build of the per-request code (orchestrator/native.py): the simulator runs ~2x faster;
# tests run against it (tests/test_native.py compares it with the sources)
compile: $(STAMP)
	$(BIN)/orchestrator compile

# two workers (pytest-xdist), each taking whole test files (a file's module fixtures, such as the
# live bench's servers, stay in one process); most tests wait on servers, so two overlap well on 2 cores
test: system-deps $(STAMP) compile
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

nightly: $(STAMP)
	$(BIN)/python -m pytest -q -m nightly

clean:
	rm -rf $(VENV) model_repository/*/ model_repository/variants.json build/native .mypy_cache orchestrator/*.so orchestrator/*/*.so orchestrator/native-sources.json

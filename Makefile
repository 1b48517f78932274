# Two entry points for a newcomer: `make demo` (the main job) and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed

.PHONY: demo test nightly bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[export,dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/orchestrator export

test: $(STAMP)
	$(BIN)/python -m pytest -q

nightly: $(STAMP)
	$(BIN)/python -m pytest -q -m nightly

clean:
	rm -rf $(VENV) model_repository/*/ model_repository/variants.json

# The two commands a new machine needs: `make run` and `make test`.
# Both create .venv on first use and reinstall only when pyproject.toml changes.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@

run: $(STAMP) ## run the daemon in the foreground (ARGS="--config-dir DIR" to pass flags)
	$(BIN)/orchestratr daemon $(ARGS)

test: $(STAMP) ## run the whole test suite
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: $(STAMP) ## print the supervisor, HTTP API, event stream, hotkey and run-or-raise figures
	$(BIN)/python bench/supervisor.py
	$(BIN)/python bench/api.py
	$(BIN)/python bench/events.py
	$(BIN)/python bench/hotkeys.py
	$(BIN)/python bench/raise.py

clean:
	rm -rf $(VENV) build *.egg-info

# The two commands a new machine needs: `make run` and `make test`; `make install` puts the
# `orchestratr` command on PATH (with pipx). The first two create .venv on first use and
# reinstall only when pyproject.toml changes.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
JOBS ?= 3  # test workers: most tests wait on real processes, so 3 fit on 2 cores (4m30 here)

.PHONY: run install test lint system bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@

run: $(STAMP) ## run the daemon in the foreground (ARGS="--config-dir DIR" to pass flags)
	$(BIN)/orchestratr daemon $(ARGS)

install: ## put `orchestratr` on PATH for this user, in a venv of its own (pipx)
	@command -v pipx >/dev/null 2>&1 || { echo "make install needs pipx: sudo apt-get install pipx (or: python3 -m pip install --user pipx)" >&2; exit 1; }
	pipx install --force .
	@bin=$$(pipx environment --value PIPX_BIN_DIR); case ":$$PATH:" in *":$$bin:"*) ;; \
	  *) echo "orchestratr is in $$bin, which is not on PATH yet: run \`pipx ensurepath\` and open a new shell" >&2 ;; esac

test: system lint ## system packages, lint, type-check, then the whole suite in JOBS workers
	@# compiled as pip installs it: with PYTHONDONTWRITEBYTECODE set (as on this project's
	@# machines) every daemon and CLI run compiled 240 modules again, 140 ms of CPU each
	$(BIN)/python -m compileall -q orchestratr
	$(BIN)/python -m pytest -n $(JOBS) $(PYTEST_ARGS)

lint: $(STAMP) ## ruff (rules in pyproject.toml), then mypy (strict on supervisor/, registry/, api/)
	$(BIN)/ruff check orchestratr tests bench
	$(BIN)/mypy

system: ## install the system packages the tests drive (or name the command that does)
	tools/system-packages

bench: $(STAMP) ## print every figure: supervisor, scale, HTTP API, events, messaging, hotkeys, logs, vs supervisord
	$(BIN)/python -m compileall -q orchestratr
	$(BIN)/python bench/supervisor.py
	$(BIN)/python bench/scale.py
	$(BIN)/python bench/api.py
	$(BIN)/python bench/events.py
	$(BIN)/python bench/messaging.py
	$(BIN)/python bench/hotkeys.py
	$(BIN)/python bench/raise.py
	$(BIN)/python bench/logs.py
	$(BIN)/python bench/vs_supervisord.py

clean:
	rm -rf $(VENV) build *.egg-info

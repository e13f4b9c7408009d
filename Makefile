# The README's two commands: `make demo` (main job on the embedded sample) and `make test`.
# Both first run .ci/install, which makes (or reuses) the virtual environment $(VENV) and installs
# into it; everything then runs with that environment's Python. `make test VENV=/path/to/env`
# uses another environment (created there when missing).
.PHONY: install demo test test-only

VENV ?= .venv
# The environment's bin first on PATH, as `source $(VENV)/bin/activate` would do.
VENV_ENV = export VIRTUAL_ENV="$(abspath $(VENV))" PATH="$(abspath $(VENV))/bin:$$PATH";

install:
	VENV="$(VENV)" bash .ci/install

demo: install
	$(VENV_ENV) lomo-datasets demo --out lomo-demo

test: install test-only

# pytest exits 5 when it collects no tests; that is not a failure of the suite.
test-only:
	@echo "test: $(abspath $(VENV))/bin/python -m pytest -q --durations=30 tests"
	$(VENV_ENV) python -m pytest -q --durations=30 tests; rc=$$?; if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; exit 0; fi; exit $$rc

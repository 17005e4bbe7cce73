# Two commands: `make run` (set up, then run the whole stack locally) and `make test`.
#
# What they change outside this checkout: missing Debian packages, installed by
# scripts/setup-system.sh (it names them before installing; running services are left alone).
# Everything else stays in this directory: the virtualenv (.venv/, from the hash-pinned lock
# files) and the local stack's data (var/). Run as root, nginx's workers run as `nobody` and
# use two fresh /tmp/upload-* directories while the stack runs.
VENV    ?= .venv
PYTHON  ?= python3
STAMP   := $(VENV)/.installed-$(shell cat pyproject.toml requirements.lock requirements-dev.lock scripts/setup-system.sh scripts/fetch-promtool.sh | sha256sum | cut -c1-12)

.PHONY: setup run test bench lint lock clean

setup: $(STAMP)

$(STAMP): pyproject.toml requirements.lock requirements-dev.lock scripts/setup-system.sh scripts/fetch-promtool.sh
	bash scripts/setup-system.sh
	@echo "setup: creating the virtualenv $(VENV)/ and installing requirements-dev.lock into it"
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet --require-hashes --no-deps -r requirements-dev.lock
	$(VENV)/bin/pip install --quiet --no-deps -e .
	bash scripts/fetch-promtool.sh $(VENV)/bin
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

run: setup
	$(VENV)/bin/upload-service dev

test: setup
	$(VENV)/bin/lint-imports
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

bench: setup
	$(VENV)/bin/python -m bench

# Re-resolve both lock files after changing dependencies in pyproject.toml (pip-tools).
lock:
	$(VENV)/bin/pip install --quiet pip-tools
	$(VENV)/bin/pip-compile --quiet --generate-hashes --strip-extras --no-emit-index-url --no-emit-find-links \
	  --output-file requirements.lock pyproject.toml
	$(VENV)/bin/pip-compile --quiet --generate-hashes --strip-extras --no-emit-index-url --no-emit-find-links \
	  --extra dev --extra test --output-file requirements-dev.lock pyproject.toml

clean:
	rm -rf $(VENV) var .pytest_cache

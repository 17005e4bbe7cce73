# Two commands: `make run` (set up, then run the whole stack locally) and `make test`.
VENV    ?= .venv
PYTHON  ?= python3
STAMP   := $(VENV)/.installed-$(shell cat pyproject.toml scripts/setup-system.sh | sha256sum | cut -c1-12)

.PHONY: setup run test bench lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml scripts/setup-system.sh
	bash scripts/setup-system.sh
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[test]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

run: setup
	$(VENV)/bin/upload-service dev

test: setup
	$(VENV)/bin/lint-imports
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

bench: setup
	$(VENV)/bin/python -m bench

clean:
	rm -rf $(VENV) var .pytest_cache

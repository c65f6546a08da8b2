# The two commands a newcomer needs: `make serve` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install serve test check bench

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml scripts/install
	bash scripts/install $(VENV)
	touch $@

serve: install
	$(VENV)/bin/sluice serve

check: install
	bash scripts/check $(VENV)

test: check
	$(PY) -m pytest

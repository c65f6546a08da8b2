# The two commands a newcomer needs: `make serve` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install install-serve serve test check

# What `make serve` needs: Sluice itself (torch, transformers, sentence-transformers, Redis clients).
install-serve: $(VENV)/.installed-serve

$(VENV)/.installed-serve: pyproject.toml scripts/install
	bash scripts/install $(VENV) ""
	touch $@

# What the tests and benchmarks need on top: test tools, vLLM on CPU, HNSW.
install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml scripts/install
	bash scripts/install $(VENV) dev,vllm,hnsw
	touch $@

serve: install-serve
	$(VENV)/bin/sluice serve

check: install
	bash scripts/check $(VENV)

test: check
	$(PY) -m pytest

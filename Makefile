# Every target sets up .venv itself, so a fresh clone needs nothing but `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat requirements.txt requirements-dev.txt | cksum | cut -d' ' -f1)
STYLES := eli5 intuitive executive

.PHONY: venv test lint smoke pipeline train bench clean

venv: $(STAMP)
$(STAMP): requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	rm -f $(VENV)/.installed-* && touch $@

test: $(STAMP)
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# Steps 1-4 with their defaults; needs the network and GEMINI_API_KEY. Each step resumes, so a rerun continues.
pipeline: $(STAMP)
	$(PY) paperExtractor.py
	$(PY) sdg.py
	$(PY) trim_jsonl.py
	$(PY) split_data.py

bench: $(STAMP)
	$(PY) bench/extract_bench.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache

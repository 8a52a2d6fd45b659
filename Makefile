# The two commands a fresh machine needs: `make run` and `make test`. Each builds .venv first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: run test lint install clean bench

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first and pinned: this machine's CPU wheel; an open requirement would pull a CUDA build.
	$(PY) -m pip install -q "torch==2.13.0"
	$(PY) -m pip install -q -e ".[test,cloud,report]"
	touch $(STAMP)

install: $(STAMP)

# --always-code: code every sample by pixels so the demo shows the codec; without it the pipeline keeps
# any original file that is smaller than its coded form (with today's model, every sample PNG).
run: $(STAMP)
	$(VENV)/bin/bitswap pipeline compress samples out/archive --actors 2 --shard-size 2 --always-code
	$(VENV)/bin/bitswap pipeline verify out/archive
	$(VENV)/bin/bitswap report out/archive --format html --out out/report.html

lint: $(STAMP)
	$(VENV)/bin/ruff check .

test: lint
	$(VENV)/bin/python -m pytest -q

bench: $(STAMP)
	$(PY) bench/coder_speed.py

clean:
	rm -rf out .pytest_cache .ruff_cache

# rlm-local: `make quickstart` sets up and answers a real query; `make test` sets up and runs every test.
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO := /tmp/rlm-local-demo.txt

.PHONY: setup quickstart test test-fast lint bench eval clean

setup:
	bash scripts/setup.sh

# The main job: a needle query over ~400,000 characters (about 3x the default model's window), on the real engine.
quickstart: setup
	$(PY) scripts/make_demo_context.py $(DEMO)
	$(VENV)/bin/rlm-local run --context $(DEMO) --query "What is the access code mentioned in the text?" \
	  --trajectory runs/quickstart.jsonl

test: setup
	bash scripts/install_browser.sh
	$(PY) -m pytest -q -p no:cacheprovider

test-fast:
	$(PY) -m pytest -q -m "not engine" -p no:cacheprovider

lint:
	$(VENV)/bin/ruff check rlm_local sandbox scripts tests
	$(VENV)/bin/ruff format --check rlm_local sandbox scripts tests

# A small evaluation on development seeds (minutes on a CPU); see README "Evaluation" for the report's settings.
eval: setup
	$(VENV)/bin/rlm-local eval --seeds dev:2 --max-model-len 4096 --lengths 8000 --out runs/eval-dev

bench:
	$(PY) scripts/bench_subcalls.py
	$(PY) scripts/bench_sandbox.py
	$(PY) scripts/bench_scheduler.py

clean:
	rm -rf runs .pytest_cache

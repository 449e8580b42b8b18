# Set-up and checks. `make demo` and `make test` work on a fresh clone: they create .venv first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The real data sets live beside the repository; never copied into it.
ifneq ($(wildcard ../shared/data),)
export RNADIFF_DATA_DIR ?= $(abspath ../shared/data)
endif

.PHONY: install demo test lint format bench nested peers clean

$(BIN)/rnadiff: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# torch is pinned to the CPU build on this machine's disk; an unpinned torch pulls a CUDA build.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(BIN)/rnadiff

install: $(BIN)/rnadiff

demo: install
	$(BIN)/rnadiff demo --out demo_output

lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

test: lint
	$(BIN)/python -m pytest -q

format: install
	$(BIN)/ruff format src tests benchmarks
	$(BIN)/ruff check --fix src tests benchmarks

# Full-size runs (not part of the tests): results go to benchmarks/results/.
# Peers (scGen, CPA, Squidiff) take part when installed with `make peers`.
bench: install
	$(BIN)/python benchmarks/run.py --out benchmarks/results
	# cross-check of some metrics against cell-eval's (skipped when its venv is missing)
	$(BIN)/python benchmarks/celleval_crosscheck.py --out benchmarks/results
	# `rnadiff evaluate --by` on a screen must give the benchmark's per-knock-out scores (~1 min)
	$(BIN)/python benchmarks/evaluate_by_check.py
	# denoising: Zeisel 2015 deep cells thinned, denoised, compared with the deep truth
	$(BIN)/python benchmarks/denoise_zeisel.py
	# does the discrimination score reward exaggerated effects? (no model, ~1 min)
	$(BIN)/python benchmarks/discrimination_scale.py
	# training length vs memorization on the small HSMM time course (TrainConfig.max_epochs, ~10 min)
	$(BIN)/python benchmarks/epochs_study.py
	# is the E-distance's PCA space fair? a perfect prediction must score ~0 (no model, ~2 min)
	$(BIN)/python benchmarks/pca_space_check.py
	# do counterfactual cells lose spread, and would a spread calibration help? (~4 min)
	$(BIN)/python benchmarks/spread_study.py

# Were Kang's defaults chosen on the test folds? Each re-chosen on inner folds (~1 h 10 min)
nested: install
	for p in steps p_mean width compose; do \
		$(BIN)/python benchmarks/nested_defaults.py --param $$p || exit 1; \
	done

peers:
	bash benchmarks/peers/install.sh all

# The documentation site, built offline into site/; the tutorials (notebooks/) are executed
# on the real data (RNADIFF_DATA_DIR; ~4 min on 2 cores). RNADIFF_DOCS_EXECUTE=0 skips them.
.PHONY: docs
docs: install
	$(BIN)/pip install --quiet -e ".[docs]"
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

clean:
	rm -rf $(VENV) demo_output .pytest_cache .ruff_cache

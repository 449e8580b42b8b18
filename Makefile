# Set-up and checks. `make demo` and `make test` work on a fresh clone: they create .venv first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The real data sets live beside the repository; never copied into it.
ifneq ($(wildcard ../shared/data),)
export RNADIFF_DATA_DIR ?= $(abspath ../shared/data)
endif

.PHONY: install demo test lint format bench bench-scale study nested peers clean

$(BIN)/rnadiff: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# torch is pinned to the CPU build on this machine's disk; an unpinned torch pulls a CUDA build.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[dev,docs]"
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

# Full-size runs (not part of the tests). The benchmark: every task, 3 seeds, peers when
# installed (`make peers`), into benchmarks/results/latest/ (~30 min on 2 cores with peers before
# the drug/dose/fate tasks (~45 min at 2 jobs, loaded machine) and denoising (~17 min) joined).
bench: install
	$(BIN)/python benchmarks/run.py

# The scale benchmark (issue 25; not part of `make test`): synthetic count files of 10k, 100k and
# 1M cells x 2,000 genes and 100k x 20,000 genes (made once, ~10 min, 2.8 GB, git-ignored),
# rnadiff and scVI (`make peers`) on each at 1 and 2 threads, into benchmarks/results/scale/
# (results.csv, summary.md, readme_row.md). ~40 min per thread count on 2 cores (measured at 1
# thread: 38 min, half of it the 1M and 100k x 20k files), ~1 h 30 min in all; SCALE_ARGS=
# "--sizes 10k --threads 1" for a part (rows merge), SCALE_ARGS=--quick: a harness check.
bench-scale: install
	$(BIN)/python benchmarks/scale/measure.py $(SCALE_ARGS)

# A study: the benchmark under the variants of benchmarks/studies/$(STUDY).toml, into
# benchmarks/results/studies/$(STUDY)/, e.g. `make study STUDY=genes`.
study: install
	$(BIN)/python benchmarks/run.py --study $(STUDY)

# Were Kang's defaults chosen on the test folds? Each re-chosen on inner folds (~1 h 10 min)
nested: install
	for p in steps p_mean width compose; do \
		$(BIN)/python benchmarks/run.py --study nested_$$p || exit 1; \
	done

peers:
	bash benchmarks/peers/install.sh all

# The documentation site, built offline into site/; the tutorials (notebooks/) are executed
# on the real data (RNADIFF_DATA_DIR; ~4 min on 2 cores). RNADIFF_DOCS_EXECUTE=0 skips them.
.PHONY: docs
docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

clean:
	rm -rf $(VENV) demo_output .pytest_cache .ruff_cache

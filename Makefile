# Two entry points for a fresh machine: `make reproduce` and `make test` (see README.md).
VENV      ?= .venv
PY        := $(VENV)/bin/python
NOTEBOOKS := 1_create_dataset.ipynb 2_gradcam.ipynb 3_layercam.ipynb \
             4_hybrid_gradcam_layercam.ipynb 5_evaluation_comparison.ipynb
STAMP     := $(VENV)/.installed

# glibc hands large freed blocks back to the kernel, so every batched forward page-faults its
# activation buffers afresh (a third of the CPU time went to the kernel). Keeping them measured
# 36.9 -> 25.8 ms per image at batch 16 on these 2-core machines (helpers.bench, /usr/bin/time).
export MALLOC_MMAP_THRESHOLD_ := 4294967296
export MALLOC_TRIM_THRESHOLD_ := 4294967296

.PHONY: setup reproduce test bench study explore

setup: $(STAMP)

# The venv holds about 8 GB (PyPI's torch 2.14.1 is a CUDA build: 3.2 GB of NVIDIA libraries it cannot import
# without). No pip cache: where the wheels download, the cache would keep a second copy of them (about 3 GB).
$(STAMP): requirements.txt requirements-nodeps.txt pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --no-cache-dir --upgrade pip
	$(PY) -m pip install --quiet --no-cache-dir -r requirements.txt
	$(PY) -m pip install --quiet --no-cache-dir --no-deps -r requirements-nodeps.txt
	$(PY) -m pip install --quiet --no-cache-dir --no-deps -e .
	touch $(STAMP)

# All notebooks in order, headless, outputs stored in the notebooks and written to results/; pictures of the
# licence-restricted ImageNet photos are then dropped from the stored notebooks (helpers.teaching.restricted).
# Then a seeded sample of the committed study (16 test photos x every method of the main part, 8 val photos of
# the head's a sweep) is recomputed from scratch and compared row by row (fails on a class change, a row off by
# more than 1e-2 or a mean |difference| above 1e-4).
reproduce: $(STAMP)
	for nb in $(NOTEBOOKS); do \
	  $(VENV)/bin/jupyter nbconvert --to notebook --execute --inplace \
	    --ExecutePreprocessor.timeout=-1 "$$nb" || exit 1; \
	  $(PY) -m helpers.teaching.restricted "$$nb" || exit 1; \
	done
	$(PY) -m helpers study verify --spec full --dir results/study

# The linter (zero findings), unit tests, then every notebook through nbval in quick mode (XAI_QUICK=1).
test: $(STAMP)
	$(VENV)/bin/ruff check .
	XAI_QUICK=1 $(PY) -m pytest -q tests
	XAI_QUICK=1 $(PY) -m pytest -q --nbval-lax $(NOTEBOOKS)

# Speed against the physical floor, as ratios taken in one run; writes results/benchmark.csv.
bench: $(STAMP)
	$(PY) -m helpers.bench

# The whole study (hours of CPU here; resumable: rerun continues from the per-batch cache), into results/study/,
# on 2 Dask workers of 1 thread each: 0.90x the time of 1 process of 2 threads on 8 val photos of the a sweep
# (python -m helpers.bench --study, results/benchmark_study.csv, 2-core Xeon, 2026-11-30).
study: $(STAMP)
	$(PY) -m helpers study --spec full --out results/study --dask local:2

# The explorer as a web page on 127.0.0.1 (Voila; prints its URL, Ctrl-C stops it).
explore: $(STAMP)
	$(PY) -m helpers explore

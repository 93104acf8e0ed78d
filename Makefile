# `make test` builds .venv from nothing (pip only: it honours the local torch wheels) and runs the suite (tools/test.sh).
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# `make test-fast` is the inner loop: every test but the slow, Ray, cluster and browser ones (marked test by test),
# on two pytest-xdist workers.
FAST := not slow and not ray and not cluster and not browser

.PHONY: venv test test-fast lint study results dashboard dashboard-demo bench gpu-check clean

venv: $(STAMP)

# Rebuilt when pyproject.toml changes; the stamp is written only after a successful install.
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,lite,optuna,trackers,notebook]'
	@touch $(STAMP)

# The suite in two sessions: what starts no Ray, server or browser on two xdist workers, then the rest
# (tools/test.sh). PYTEST_ARGS goes to both.
test: $(STAMP)
	PY=$(PY) tools/test.sh $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(PY) -m pytest -q -n 2 -m "$(FAST)" $(PYTEST_ARGS)

# ruff, then the import contracts of pyproject.toml ([tool.importlinter]: layers, no upward import).
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

# The main job: a scene-count ablation on the embedded synthetic data, on CPU.
study: $(STAMP)
	$(PY) studies/scene_count.py

# Regenerate the committed example exports: one default run of each named study but the joint search
# (python -m studies.catalog --examples lists them), and the two committed zero-code ablations.
results: $(STAMP)
	for s in $$($(PY) -m studies.catalog --examples); do \
		$(PY) studies/$$s.py --name default --overwrite --results-dir results || exit 1; done
	for f in sample_entropy_weight batch_entropy_weight; do \
		$(PY) -m studies.ablate $$f --values 0 1 4 --name default --overwrite --results-dir results || exit 1; done

dashboard: $(STAMP)
	$(VENV)/bin/streamlit run dashboards/app.py --server.address 127.0.0.1

dashboard-demo: $(STAMP)
	$(PY) -m dashboards.demo .cache/demo_results
	SALGL_RESULTS_DIR=.cache/demo_results $(VENV)/bin/streamlit run dashboards/app.py --server.address 127.0.0.1

bench: $(STAMP)
	$(PY) -m salgl_core.bench attention
	$(PY) -m salgl_core.bench loader

# On a GPU machine, under 8 minutes by construction (a budget per step, tools/gpu_check.sh): attention/step,
# train throughput (eager, then compiled), a 448 px epoch, a 2-trial study.
# Every JSON goes to $$OUT/gpu_check/ when OUT is set. GPU_CHECK_SMOKE=1 runs it small on a CPU.
gpu-check: $(STAMP)
	PY=$(PY) tools/gpu_check.sh

# Leaves runs/ alone: users' exports live there.
clean:
	rm -rf .ray_results .cache .pytest_cache .ruff_cache .import_linter_cache
	find . -path ./.venv -prune -o -name __pycache__ -type d -exec rm -rf {} +

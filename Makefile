# Two commands on a fresh machine: `make sweep` and `make test`. Both build .venv when it is missing.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH_PIN := torch==2.13.0

.PHONY: install test test-fast sweep debug learn lint bench gpu-check gpu-site clean

# CPU torch is pinned and installed first: an unpinned torch would pull a multi-GB CUDA build.
# A GPU user can pre-install their CUDA torch 2.13 into .venv; pip then keeps it.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q $(TORCH_PIN)
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q --durations=25

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

debug: $(STAMP)
	$(BIN)/rlan debug -c configs/debug.yaml

# A small real sweep: embedded local Ray, MLflow in ./mlruns.db, 4 trials of configs/sweep.yaml (the
# learnable recipe on the local-rule tasks, 60 epochs), 2 at a time, about 4-7 minutes on 2 cores.
sweep: $(STAMP)
	$(BIN)/rlan sweep -c configs/sweep.yaml -s search_spaces/quick.yaml --trials 4 --concurrency 2

# The learnability benchmark: configs/learnable.yaml on its 12 global-rule tasks, a table at the end.
learn: $(STAMP)
	$(BIN)/python -m bench.learning

lint: $(STAMP)
	$(BIN)/ruff check rlan orchestrator tests bench
	$(BIN)/ruff format --check rlan orchestrator tests bench

bench: $(STAMP)
	$(BIN)/python -m bench --orchestration --time-to-accuracy

# The CUDA path on a GPU machine (bench/gpu_check.py): no .venv there, so it runs the machine's python3
# with the packages `make gpu-site` packed into .gpu/; on this machine it uses .venv and skips the GPU parts.
gpu-check:
	bash scripts/gpu_check.sh

gpu-site: $(STAMP)
	bash scripts/gpu_site.sh

clean:
	rm -rf $(VENV) .pytest_cache mlruns.db mlartifacts

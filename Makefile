# qwen3jax: every target installs what it needs first, so a fresh machine needs only `make run` / `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
EXP ?= pretrain_s1
VARIANT ?=
ARGS ?=
# Optional dependencies to install: test (CPU development, the default) or tpu (TPU VMs: jax[tpu], no torch).
EXTRAS ?= test
TOPOLOGY ?=
WORKDIR ?= runs/$(EXP)
PYTEST_ARGS ?=
# glibc malloc keeps freed memory in the process (one arena, no mmap per buffer, no trimming): XLA:CPU frees its
# large step temporaries after every step, and by default glibc hands them back to the OS, so the next step
# page-faults them in again (~550k faults and ~1.8 s of kernel time per fwd+bwd step on the bench config).
# Set GLIBC_TUNABLES yourself to override.
export GLIBC_TUNABLES ?= glibc.malloc.arena_max=1:glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=68719476736

.PHONY: install test test-fast run sweep pipeline chat eval bench aot clean-venv

install: $(STAMP)

# Re-install only when the declared dependencies change.
$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[$(EXTRAS)]'
	touch $(STAMP)

# worksteal: an idle worker takes queued tests from the other, so the long end-to-end tests do not leave one core
# idle at the end of the run.
test: install
	$(PY) -m pytest -n 2 --dist worksteal $(PYTEST_ARGS)

test-fast: install
	$(PY) -m pytest -n 2 --dist worksteal -m "not slow" $(PYTEST_ARGS)

CONFIG = experiments/$(EXP).py$(if $(VARIANT),:$(VARIANT))

run: install
	$(PY) -m qwen3jax.run --config=$(CONFIG) $(ARGS) --workdir=$(WORKDIR)

sweep: install
	$(PY) -m qwen3jax.sweep --config=experiments/$(EXP).py $(ARGS)

# The whole recipe, stage after stage, each from the previous one's run directory under ROOT, then every stage
# evaluated with the harness and one table (ROOT/pipeline.md). Rerun to resume. ARGS e.g. "--variant qwen3_0_6b",
# "--set steps=5" (every stage), "--tasks math_mc,math --eval-limit 64".
ROOT ?= runs/pipeline
pipeline: install
	$(PY) -m qwen3jax.pipeline --root=$(ROOT) $(ARGS)

# CKPT: an HF folder (*.safetensors), a native checkpoint (model_config.json), a training run directory (its newest
# checkpoint) or one of its checkpoints/<step> directories.
chat: install
	@test -n "$(CKPT)" || { echo "usage: make chat CKPT=<HF folder, native checkpoint or run directory>"; exit 2; }
	$(PY) -m qwen3jax.chat_repl $(if $(wildcard $(CKPT)/*.safetensors),--hf,--ckpt) $(CKPT) $(ARGS)

# CKPT: a run directory, native checkpoint or HF folder; TASKS: built-ins (math, code, instruction, math_mc),
# .jsonl files or .json task configs, comma-separated; ARGS e.g. "--mode both --n 4 --budgets 0,64,256,1024".
eval: install
	@test -n "$(CKPT)" -a -n "$(TASKS)" || { echo "usage: make eval CKPT=<checkpoint> TASKS=<task,...> [ARGS=...]"; exit 2; }
	$(PY) -m qwen3jax.eval --ckpt $(CKPT) --tasks $(TASKS) $(ARGS)

bench: install
	$(PY) -m qwen3jax.bench

# Compile the experiment's train step for a TPU slice on this machine (libtpu, no TPU): memory per chip, fits, a
# roofline estimate. make aot EXP=pretrain_s1 VARIANT=qwen3_8b TOPOLOGY=v5p-64 [ARGS="--report=r.json"]
aot: install
	@test -n "$(TOPOLOGY)" || { echo "usage: make aot EXP=<experiment> [VARIANT=<preset>] TOPOLOGY=<slice, e.g. v5p-64>"; exit 2; }
	$(PY) -m qwen3jax.aot --config=$(CONFIG) --topology=$(TOPOLOGY) $(ARGS)

clean-venv:
	rm -rf $(VENV)

"""The pretraining experiment config, shared by `experiments/pretrain_s*.py` (each file states only how its stage
differs). Every field exists in the returned ConfigDict, so any of them can be overridden on the command line
(`--config.optim.peak_lr=3e-4`); configs are locked, so a mistyped key fails before anything compiles."""

from __future__ import annotations

import os

import ml_collections

from qwen3jax.model import ModelConfig

# Which variant runs when the experiment is given no argument: CPU machines get the tiny model on the embedded
# corpus; accelerators get the full-size default named by the experiment.
TINY = "tiny"
TARGET_BACKEND_ENV = "QWEN3JAX_TARGET_BACKEND"


def choose_variant(arg: str, full_size_default: str) -> tuple[str, str]:
    """(variant, reason) for the first log line."""
    if arg:
        return arg, f"asked for {arg!r}"
    import jax

    from qwen3jax.parallel.distributed import on_tpu_vm

    # The backend the run is planned for: `qwen3jax.aot` compiles for TPU slices on a CPU machine. On a TPU VM
    # without asking JAX, which would start it before the slice's processes have joined (parallel/distributed.py).
    backend = os.environ.get(TARGET_BACKEND_ENV) or ("tpu" if on_tpu_vm() else jax.default_backend())
    if backend == "cpu":
        return TINY, "no variant given and the backend is CPU"
    return full_size_default, f"no variant given and the backend is {backend}"


def pretrain_config(stage: str, variant: str, reason: str) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.name = stage
    c.variant = variant
    c.variant_reason = reason
    tiny = variant.startswith(TINY)  # the CPU-scale presets (tiny, tiny_moe)
    model = ModelConfig.from_preset(variant, rope_theta=10_000.0)  # S1/S2 use base 10k; S3 raises it (ABF)
    if not tiny:  # accelerators: fp32 weights, bf16 compute, recompute each layer in the backward pass, the Pallas
        # attention kernel on TPU (model/splash.py), grouped matmuls for experts
        model = model.replace(dtype="bfloat16", remat="full", attention_kernel="auto",
                              moe_kernel="ragged" if model.is_moe else model.moe_kernel,
                              moe_expert_exchange="auto" if model.is_moe else "none")  # fmt: skip
    c.model = ml_collections.ConfigDict(model.to_dict())
    c.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "expert": 1, "context": 1, "tensor": 1})
    if not tiny:  # pods: shard weights (ZeRO-3) over every device; MoE experts additionally over an expert axis
        c.mesh.data, c.mesh.fsdp = 1, -1
        if model.is_moe:
            c.mesh.expert = 8
    c.seq_len = 256 if tiny else 4096
    c.global_batch = 16 if tiny else 512
    c.micro_batches = 1 if tiny else 8  # 64 sequences of 4K per micro-batch; 0: one sequence per batch shard
    c.steps = 300 if tiny else 100_000
    c.seed = 0
    c.init_from = ""  # run dir, checkpoints dir, checkpoint step dir, native checkpoint or HF folder
    # train.batch_sources.SOURCES: the data mixture, read as `data_shards` shards (0: one per process)
    c.batch_source = ml_collections.ConfigDict({"name": "packed", "data_shards": 0})
    c.frozen = ml_collections.ConfigDict()  # {name: {"path": ...}}: reference / teacher / reward model, never trained
    c.loss = ml_collections.ConfigDict(
        {"name": "pretrain", "z_loss": 1e-4, "balance_coef": 1e-3, "balance_scope": "global", "vocab_slices": 8}
    )
    c.optim = ml_collections.ConfigDict(
        {
            "schedule": "cosine",  # cosine | wsd
            "peak_lr": 3e-3 if tiny else 3e-4,
            "warmup_steps": 20 if tiny else 2000,
            "decay_steps": 0,  # cosine: 0 = decay over the rest of the run
            "decay_fraction": 0.2,  # wsd: final fraction of the run spent decaying
            "end_lr_ratio": 0.1,
            "b1": 0.9,
            "b2": 0.95,
            "eps": 1e-8,
            "weight_decay": 0.1,
            "decay_norms": False,
            "decay_embeddings": False,
            "clip_norm": 1.0,
            "max_nonfinite_steps": 20,
        }
    )
    c.checkpoint = ml_collections.ConfigDict({"every": 100 if tiny else 1000, "keep": 3, "async_save": True})
    c.eval = ml_collections.ConfigDict(
        {"name": "held_out_loss", "every": 50 if tiny else 1000, "batches": 4 if tiny else 50, "long_from": 0}
    )  # name: train.evals.EVALS; long_from > 0: also the loss at document positions >= it (`eval/loss_long`)
    c.log_every = 10 if tiny else 50
    c.hardware = ml_collections.ConfigDict({"peak_flops": 0.0})  # per device; 0 = known table or measured (CPU)
    c.samples = ml_collections.ConfigDict(
        {
            "name": "text",  # train.evals.SAMPLES: text continuations | chat replies in both thinking modes
            "num": 3,
            "max_new_tokens": 40,
            "prompts": ["def fibonacci(n):", "The standard library", "Problem: Evaluate 12 + 7.\n\nSolution:\n"],
            # Decoding (sample.generate): SPEC §4's non-thinking eval settings, drawn with a fixed seed so a rerun
            # writes the same samples. temperature=0 is greedy, which loops on a small model's likeliest phrase.
            "temperature": 0.7,
            "top_p": 0.8,
            "top_k": 20,
            "presence_penalty": 0.0,
            "seed": 0,
        }
    )
    return c


def sft_config(
    phase: str, arg: str, source: str, full_size_default: str, full_size_jsonl: tuple[str, str] | None = None
) -> ml_collections.ConfigDict:
    """The settings every supervised post-training phase shares (chat SFT, long-CoT cold start, thinking-mode
    fusion, off-policy distillation; SPEC §4): conversations of the chat set `source` packed whole, the masked
    next-token loss (`sft`) without z-loss, few steps at a low rate from `init_from` (by default the stage-1
    pretraining run), chat samples in both modes. The held-out problem settings are those of the `held_out_reward`
    evaluator, used by the phases whose `eval.parts` name it. `full_size_jsonl`: the (train, held-out) chat JSONL
    files that full-size variants read as `source` instead of the embedded set. Each experiment file states only
    how it differs."""
    from qwen3jax.data.stages import chat_sft_config  # pylint: disable=import-outside-toplevel

    variant, reason = choose_variant(arg, full_size_default)
    tiny = variant.startswith(TINY)
    c = pretrain_config(phase, variant, reason)
    c.data = chat_sft_config(source)
    if full_size_jsonl and not tiny:
        c.data.sources[source].update(kind="jsonl", path=full_size_jsonl[0], eval_path=full_size_jsonl[1])
    c.init_from = "runs/pretrain_s1"  # the default run directory of pretraining stage 1
    c.loss.name, c.loss.z_loss = "sft", 0.0
    c.steps = 150 if tiny else 1_000
    c.global_batch = 16 if tiny else 128
    c.optim.peak_lr = 1e-3 if tiny else 1e-5
    c.optim.warmup_steps = 10 if tiny else 50
    c.optim.end_lr_ratio = 0.1
    c.eval.update(
        name="composite",
        parts=["held_out_loss"],
        every=50 if tiny else 200,
        batches=4 if tiny else 20,
        prompts="embedded:math",  # held-out problems (eval split) with gold answers; or a query–verifier JSONL
        num_prompts=32 if tiny else 500,
        thinking=True,
        max_new_tokens=160 if tiny else 16_384,
        # the answer check, and (weight 0: reported, not counted in the accuracy) whether the reply is well formed
        rewards=[{"name": "exact_match" if tiny else "math"}, {"name": "format", "weight": 0.0}],
    )
    c.checkpoint.every = 50 if tiny else 250
    c.samples.name = "chat"
    c.samples.prompts = ["Evaluate 3 × (4 + 5) - 6.", "Find the greatest common divisor of 84 and 36."]
    c.samples.max_new_tokens = 160 if tiny else 2048
    return c

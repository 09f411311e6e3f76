"""The pretraining experiment config, shared by `experiments/pretrain_s*.py` (each file states only how its stage
differs). Every field exists in the returned ConfigDict, so any of them can be overridden on the command line
(`--config.optim.peak_lr=3e-4`); configs are locked, so a mistyped key fails before anything compiles."""

from __future__ import annotations

import dataclasses
import os

import ml_collections

from qwen3jax.model import ModelConfig

# Which variant runs when the experiment is given no argument: CPU machines get the tiny model on the embedded
# corpus; accelerators get the full-size default named by the experiment.
TINY = "tiny"
TARGET_BACKEND_ENV = "QWEN3JAX_TARGET_BACKEND"


@dataclasses.dataclass(frozen=True)
class SlicePlan:
    """The TPU slice a full-size preset's pretraining defaults are made for, and how its 512 x 4K batch is cut to fit
    that slice's HBM. Each plan is compiled for its slice ahead of time (`python -m qwen3jax.aot --table`: the README
    table says what each needs per chip)."""

    slice: str  # gcloud accelerator type (parallel/topology.py)
    micro_batches: int  # of stage 1's global batch: sequences per batch shard per micro-batch = 512 / (this x shards)
    expert: int = 1  # the `expert` mesh axis (MoE); `fsdp` takes the rest of the slice


FULL_SIZE_PLANS = {
    # 16 v5e chips of 16 GiB: one 4K sequence per chip per micro-batch (4 were 20 GB: activations, fp32 logit slices).
    "qwen3_0_6b": SlicePlan("v5litepod-16", micro_batches=32),
    "qwen3_1_7b": SlicePlan("v5litepod-16", micro_batches=32),
    "qwen3_8b": SlicePlan("v5p-64", micro_batches=8),  # 32 chips: 2 sequences per chip per micro-batch
    "qwen3_32b": SlicePlan("v5p-256", micro_batches=4),  # 128 chips: 4 sequences per chip per step
    # v5p-128 is a 4x4x4 chip torus: mesh axes must be products of its sides (8 is not), so 16 expert ranks (8
    # experts each) x 4 fsdp.
    "qwen3_30b_a3b": SlicePlan("v5p-128", micro_batches=8, expert=16),
    "qwen3_235b_a22b": SlicePlan("v5p-512", micro_batches=2, expert=8),  # 256 chips: 2 sequences per chip per step
}
# Presets without a documented slice (4B, 14B): 64 sequences per micro-batch.
UNPLANNED = SlicePlan("", micro_batches=8)


def documented_runs() -> list[tuple[str, str, str]]:
    """Every documented full-size run as (experiment, preset, slice): stage 1 of each planned preset on the slice
    its defaults are made for (the README's AOT table: `python -m qwen3jax.aot --table`), and stage 3's 32K context
    on two of them. Stage 2 has stage 1's shapes (same program), so it is not listed twice."""
    stage3 = [("pretrain_s3", p, FULL_SIZE_PLANS[p].slice) for p in ("qwen3_0_6b", "qwen3_8b")]
    return [("pretrain_s1", preset, plan.slice) for preset, plan in FULL_SIZE_PLANS.items()] + stage3


def choose_variant(arg: str, full_size_default: str) -> tuple[str, str]:
    """(variant, reason) for the first log line."""
    if arg:
        return arg, f"asked for {arg!r}"
    import jax

    from qwen3jax.platform import on_tpu_vm

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
    plan = FULL_SIZE_PLANS.get(variant, UNPLANNED)
    c.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "expert": 1, "context": 1, "tensor": 1})
    if not tiny:  # pods: shard weights (ZeRO-3) over every device; MoE experts additionally over an expert axis
        c.mesh.data, c.mesh.fsdp = 1, -1
        c.mesh.expert = plan.expert if model.is_moe else 1
    c.seq_len = 256 if tiny else 4096
    c.global_batch = 16 if tiny else 512
    c.micro_batches = 1 if tiny else plan.micro_batches  # 0: one sequence per batch shard per micro-batch
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
    # peak_flops per device (0: known table or measured on CPU); slice: what the defaults are planned for (`aot`'s
    # default --topology)
    c.hardware = ml_collections.ConfigDict({"peak_flops": 0.0, "slice": "" if tiny else plan.slice})
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
    c.micro_batches = 1 if tiny else 0  # one sequence per batch shard per micro-batch: fits every planned slice
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

"""Forward+backward throughput of the model vs HF transformers (torch, CPU) on the same config, same run.

Reports tokens/s for both (timed in alternation, see `alternating`), the median per-round ratio, and our achieved
FLOP/s as a fraction of the same-run fp32 matmul peak.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from qwen3jax.model import ModelConfig, Qwen3
from qwen3jax.model.floor import Floor, matmul_floor
from qwen3jax.train.losses import PretrainLoss, token_cross_entropy

BENCH_DENSE = ModelConfig(
    vocab_size=16384, hidden_size=512, intermediate_size=1536, num_layers=4, num_heads=8, num_kv_heads=4,
    head_dim=64, rope_theta=10_000.0, max_position_embeddings=2048, tie_word_embeddings=False,
)
BENCH_MOE = BENCH_DENSE.replace(num_experts=32, num_experts_per_tok=4, moe_intermediate_size=256)
BATCH, SEQ = 8, 512
ROUNDS = 5  # alternating timing rounds per comparison
TARGET_SPEEDUP = 1.2  # vs HF, forward+backward and train step


def cpu_seconds() -> float:
    """User + system CPU seconds of this process, all its threads: on a machine shared with other jobs a step's
    CPU time stays close to what it needs alone, while its wall time grows with the load."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def timed(fn, *, warmup: int = 1, repeats: int = 3, clock: Callable[[], float] = time.perf_counter) -> float:
    """Median seconds per call after warm-up (compilation excluded), by `clock` (wall time, or `cpu_seconds`)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = clock()
        fn()
        times.append(clock() - start)
    return float(np.median(times))


def alternating(
    ours: Callable[[], object],
    reference: Callable[[], object],
    rounds: int,
    clock: Callable[[], float] = time.perf_counter,
) -> tuple[float, float, float]:
    """Seconds per call of `ours` and of `reference` (medians) and the median per-round ratio reference / ours.

    Both are warmed up, then timed in alternation round after round, so that load from other processes on the
    machine hits both alike (a shared 2-core machine drifts by 10-20% between minutes)."""
    ours()
    reference()
    pairs = []
    for _ in range(rounds):
        pairs.append(tuple(timed(fn, warmup=0, repeats=1, clock=clock) for fn in (ours, reference)))
    ours_s, ref_s = (float(np.median(column)) for column in zip(*pairs))
    return ours_s, ref_s, float(np.median([r / o for o, r in pairs]))


def matmul_peak_flops(n: int = 2048, repeats: int = 7) -> float:
    """fp32 FLOP/s of one large square matmul in XLA on this machine, now: the best of `repeats` runs, since a peak
    is what the machine can do (on a shared 2-core machine the median of a few runs varies by 30%)."""
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    f = jax.jit(lambda a: a @ a)
    f(a).block_until_ready()
    best = min(timed(lambda: f(a).block_until_ready(), warmup=0, repeats=1) for _ in range(repeats))
    return 2 * n**3 / best


def fwd_bwd_program(cfg: ModelConfig) -> tuple[Callable, nnx.State]:
    """Our forward+backward as a pure function of (params, tokens), and the parameters: mean next-token
    cross-entropy, with the LM head in vocabulary slices as the training loss computes it."""
    model = Qwen3(cfg, rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(model, nnx.Param)
    vocab_slices = PretrainLoss.vocab_slices

    def step(params, tokens):
        def loss(p):
            model = nnx.merge(graphdef, p)
            logit_slices = model.head(model(tokens[:, :-1], head=False), vocab_slices)
            return token_cross_entropy(logit_slices, tokens[:, 1:]).ce.mean()

        return jax.value_and_grad(loss)(params)

    return step, params


def ours_step(cfg: ModelConfig, tokens: np.ndarray) -> Callable[[], object]:
    """One call = one jitted forward+backward of our model on `tokens` (compiled on the first call)."""
    step, params = fwd_bwd_program(cfg)
    step, toks = jax.jit(step), jnp.asarray(tokens)
    return lambda: jax.block_until_ready(step(params, toks))


def floor_config(cfg: ModelConfig) -> ModelConfig:
    """The config whose products give `cfg`'s matmul floor. An MoE model's expert loops have data-dependent trip
    counts (no static list of products), so its experts count as one dense FFN of the same active width (top-k x
    expert width): the same FLOPs in larger products, which run at least as fast as the per-expert ones; without the
    router's small product. A lower bound on any MoE kernel's products, so still a floor."""
    if not cfg.is_moe:
        return cfg
    return cfg.replace(num_experts=0, intermediate_size=cfg.num_experts_per_tok * cfg.moe_intermediate_size)


def report_floor(what: str, floor: Floor, ours_s: float, target_s: float) -> dict:
    """Print an XLA matmul floor (see `floor.py`) against our time and the time a target asks for; returns the
    figures for the caller's row."""
    print(
        f"matmul floor, {what}: its {floor.products} products take {floor.seconds:.2f} s each run alone "
        f"({floor.flops / floor.seconds / 1e9:,.1f} GFLOP/s); ours {ours_s:.2f} s = {ours_s / floor.seconds:.2f}x "
        f"the floor; the target needs <= {target_s:.2f} s = {target_s / floor.seconds:.2f}x the floor",
        flush=True,
    )
    return {"floor_s": floor.seconds, "ours_over_floor": ours_s / floor.seconds,
            "target_over_floor": target_s / floor.seconds}  # fmt: skip


def hf_model(cfg: ModelConfig):
    """The HF transformers (torch) model with the same architecture, in training mode."""
    import transformers

    common = dict(
        vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads, num_key_value_heads=cfg.num_kv_heads, head_dim=cfg.head_dim,
        rope_theta=cfg.rope_theta, tie_word_embeddings=cfg.tie_word_embeddings, attn_implementation="sdpa",
        intermediate_size=cfg.intermediate_size,
    )  # fmt: skip
    if cfg.is_moe:
        hf_cfg = transformers.Qwen3MoeConfig(
            **common, num_experts=cfg.num_experts, num_experts_per_tok=cfg.num_experts_per_tok,
            moe_intermediate_size=cfg.moe_intermediate_size, norm_topk_prob=cfg.norm_topk_prob,
        )  # fmt: skip
        model = transformers.Qwen3MoeForCausalLM(hf_cfg)
    else:
        model = transformers.Qwen3ForCausalLM(transformers.Qwen3Config(**common))
    return model.train()


def hf_loss(model, toks):
    import torch

    logits = model(toks[:, :-1]).logits
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), toks[:, 1:].reshape(-1))


def hf_step(cfg: ModelConfig, tokens: np.ndarray) -> Callable[[], object]:
    """One forward+backward of the HF transformers model on `tokens`."""
    import torch

    model = hf_model(cfg)
    toks = torch.as_tensor(tokens, dtype=torch.long)

    def step():
        model.zero_grad(set_to_none=True)
        hf_loss(model, toks).backward()

    return step


def add_fractions_of_peak(rows: list[dict], peak_before: float) -> None:
    """Set each row's `fraction_of_peak` (from its `gflop_s`) against the fp32 matmul peak, measured again now:
    the higher of the two measurements (before and after the section) is used, since a peak is what the machine
    can do and a single measurement on a shared machine may come out low."""
    peak = max(peak_before, matmul_peak_flops())
    for row in rows:
        row["fraction_of_peak"] = row["gflop_s"] * 1e9 / peak
    fractions = ", ".join(f"{row['config']} {row['fraction_of_peak']:.0%}" for row in rows)
    print(f"fp32 matmul peak (XLA, 2048^3, best before/after): {peak / 1e9:,.1f} GFLOP/s; of it: {fractions}",
          flush=True)  # fmt: skip


def run() -> list[dict]:
    peak_before = matmul_peak_flops()
    print(f"fp32 matmul peak (XLA, 2048^3): {peak_before / 1e9:,.1f} GFLOP/s", flush=True)
    rows = []
    for name, cfg in [("dense", BENCH_DENSE), ("moe", BENCH_MOE)]:
        tokens = np.random.default_rng(0).integers(0, cfg.vocab_size, (BATCH, SEQ + 1))
        n_tokens = BATCH * SEQ
        ours, hf, ratio = alternating(ours_step(cfg, tokens), hf_step(cfg, tokens), ROUNDS)
        row = {
            "config": name,
            "ours_tok_s": n_tokens / ours,
            "hf_tok_s": n_tokens / hf,
            "speedup_vs_hf": ratio,
            "gflop_s": cfg.flops_per_token(SEQ) * n_tokens / ours / 1e9,
        }
        rows.append(row)
        print(
            f"fwd+bwd {name:5s} batch {BATCH}x{SEQ}: ours {row['ours_tok_s']:,.0f} tok/s, HF {row['hf_tok_s']:,.0f} "
            f"tok/s, ratio {row['speedup_vs_hf']:.2f}x, {row['gflop_s']:,.1f} GFLOP/s",
            flush=True,
        )
        step, params = fwd_bwd_program(floor_config(cfg))
        floor = matmul_floor(step, params, jnp.asarray(tokens))
        row |= report_floor(f"fwd+bwd {name}", floor, ours, hf / TARGET_SPEEDUP)
    add_fractions_of_peak(rows, peak_before)
    return rows

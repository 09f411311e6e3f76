"""Full train step (AdamW) throughput vs HF transformers + torch AdamW on the model-bench config, same run; the
compile time of the step at 48 layers vs 4 layers (scan over depth keeps it flat). The SFT step's row is
`train/bench_sft.py`."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from experiments import pretrain_s1
from qwen3jax.model import ModelConfig
from qwen3jax.model.bench import (
    BATCH, BENCH_DENSE, BENCH_MOE, ROUNDS, SEQ, TARGET_SPEEDUP, add_fractions_of_peak, alternating, floor_config,
    hf_loss, hf_model, matmul_peak_flops, report_floor,
)
from qwen3jax.model.floor import matmul_floor
from qwen3jax.parallel import make_mesh
from qwen3jax.train.losses import LOSSES
from qwen3jax.train.state import create_train_state
from qwen3jax.train.step import train_step


def _state_and_step(cfg: ModelConfig, loss: str = "pretrain"):
    """A fresh train state on one device and the (unjitted) step function of `loss`."""
    optim = pretrain_s1.get_config("tiny").optim
    state, _ = create_train_state(cfg, optim, 1000, make_mesh({"data": 1}, jax.devices()[:1]))
    return state, functools.partial(train_step, loss_fn=LOSSES.get(loss)())


def _batch(tokens: np.ndarray) -> dict:
    t = jnp.asarray(tokens, jnp.int32)
    ones = jnp.ones_like(t)
    return {"tokens": t, "segment_ids": ones, "positions": jnp.broadcast_to(jnp.arange(t.shape[1]), t.shape),
            "loss_mask": ones}  # fmt: skip


def ours_train(cfg: ModelConfig, tokens: np.ndarray | dict, loss: str = "pretrain") -> Callable[[], None]:
    """One call = one jitted AdamW train step of `loss` on `tokens` (unpacked rows) or a packed batch (compiled on
    the first call)."""
    state, step = _state_and_step(cfg, loss)
    step = jax.jit(step, donate_argnums=0)
    batch = _batch(tokens) if isinstance(tokens, np.ndarray) else {k: jnp.asarray(v) for k, v in tokens.items()}
    holder = [state]

    def run():
        holder[0], metrics = step(holder[0], batch)
        jax.block_until_ready(metrics)

    return run


def hf_train(cfg: ModelConfig, tokens: np.ndarray) -> Callable[[], None]:
    """One call = one HF transformers forward+backward, gradient clipping and torch AdamW step."""
    import torch

    model = hf_model(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1)
    toks = torch.as_tensor(tokens, dtype=torch.long)

    def run():
        opt.zero_grad(set_to_none=True)
        hf_loss(model, toks).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    return run


def compile_seconds(cfg: ModelConfig) -> float:
    state, step = _state_and_step(cfg)
    batch = _batch(np.zeros((2, 64), np.int32))
    start = time.perf_counter()
    jax.jit(step, donate_argnums=0).lower(state, batch).compile()
    return time.perf_counter() - start


def run() -> list[dict]:
    peak_before = matmul_peak_flops()
    print(f"fp32 matmul peak (XLA, 2048^3): {peak_before / 1e9:,.1f} GFLOP/s", flush=True)
    rows = []
    for name, cfg in [("dense", BENCH_DENSE), ("moe", BENCH_MOE)]:
        tokens = np.random.default_rng(0).integers(0, cfg.vocab_size, (BATCH, SEQ))
        n_tokens = BATCH * (SEQ - 1)  # the step predicts SEQ-1 positions per row
        ours, hf, ratio = alternating(ours_train(cfg, tokens), hf_train(cfg, tokens), ROUNDS)
        gflop_s = cfg.flops_per_token(SEQ) * BATCH * SEQ / ours / 1e9
        rows.append({"config": name, "ours_tok_s": n_tokens / ours, "hf_tok_s": n_tokens / hf, "ratio": ratio,
                     "gflop_s": gflop_s})  # fmt: skip
        print(f"train step {name:5s} batch {BATCH}x{SEQ}: ours {n_tokens / ours:,.0f} tok/s, HF+torch AdamW "
              f"{n_tokens / hf:,.0f} tok/s, ratio {ratio:.2f}x, {gflop_s:,.1f} GFLOP/s", flush=True)  # fmt: skip
        state, step = _state_and_step(floor_config(cfg))
        floor = matmul_floor(step, state, _batch(tokens))
        rows[-1] |= report_floor(f"train step {name}", floor, ours, hf / TARGET_SPEEDUP)
    add_fractions_of_peak(rows, peak_before)
    shallow = compile_seconds(BENCH_DENSE.replace(num_layers=4))
    deep = compile_seconds(BENCH_DENSE.replace(num_layers=48))
    print(f"train step compile: 4 layers {shallow:.1f}s, 48 layers {deep:.1f}s, ratio {deep / shallow:.2f}", flush=True)
    rows.append({"config": "compile", "layers4_s": shallow, "layers48_s": deep, "ratio": deep / shallow})
    return rows

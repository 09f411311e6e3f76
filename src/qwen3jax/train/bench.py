"""Full train step (AdamW) throughput vs HF transformers + torch AdamW on the model-bench config, same run; the
compile time of the step at 48 layers vs 4 layers (scan over depth keeps it flat); and the SFT step on chat-packed
rows of the embedded chat set vs the pretraining step on text-packed rows, same model and shapes, with the chat
set's packing efficiency."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from experiments import pretrain_s1
from qwen3jax.data.pipeline import build_pretrain_iterator
from qwen3jax.data.stages import chat_sft_config, s1_config
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
    rows.append(sft_vs_pretrain())
    return rows


PACKING_BATCHES = 64  # batches of the chat set measured for its packing efficiency


def sft_vs_pretrain() -> dict:
    """Capacity tokens/s (batch × sequence) of the SFT step on a chat-packed batch and of the pretraining step on
    a text-packed batch (S1 mix), dense bench model, timed in alternation; trained tokens / capacity of the chat
    set packed at the bench's sequence length."""
    kw = dict(seq_len=SEQ, batch_size=BATCH, seed=0, process_index=0, process_count=1)
    chat = build_pretrain_iterator(chat_sft_config(), **kw)
    chat_batch, text_batch = next(chat), next(build_pretrain_iterator(s1_config(), **kw))
    sft_s, pretrain_s, ratio = alternating(ours_train(BENCH_DENSE, chat_batch, "sft"),
                                           ours_train(BENCH_DENSE, text_batch), ROUNDS)  # fmt: skip
    batches = [chat_batch] + [next(chat) for _ in range(PACKING_BATCHES - 1)]
    capacity = sum(b["tokens"].size for b in batches)
    trained = sum(int(b["loss_mask"].sum()) for b in batches) / capacity
    real = sum(int((b["segment_ids"] > 0).sum()) for b in batches) / capacity
    dropped = chat.report()["dropped_too_long"]["reasoning_chat"]
    print(f"SFT step (chat-packed) {BATCH * SEQ / sft_s:,.0f} tok/s vs pretraining step (text-packed) "
          f"{BATCH * SEQ / pretrain_s:,.0f} tok/s: ratio {ratio:.3f}; chat packing at {SEQ}: {trained:.1%} of the "
          f"capacity trained, {real:.1%} filled, {dropped} conversations longer than {SEQ} dropped", flush=True)
    return {"config": "sft", "sft_tok_s": BATCH * SEQ / sft_s, "pretrain_tok_s": BATCH * SEQ / pretrain_s,
            "ratio": ratio, "trained_fraction": trained, "filled_fraction": real, "dropped": dropped}  # fmt: skip

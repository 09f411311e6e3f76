"""RL bench on the model-bench config: rollout throughput — PROMPTS prompts x SAMPLES samples x NEW_TOKENS new
tokens drawn at temperature 1, as the `rollouts` source samples them — vs HF transformers
`generate(do_sample=True, num_return_sequences=SAMPLES)` (torch, CPU, KV cache) on the same weights, same run; and
the share of one RL step (that rollout + one `grpo` update on its rows) spent in the rollout, and the rollout
program's memory (XLA's analysis of the compiled program: it reads the policy's weights in place, in the same
process and on the same mesh, and its temporaries hold the KV cache plus the decode view's one weight copy).

Neither side stops early (no stop ids; HF `min_new_tokens`), so both generate the same number of tokens; throughput
is generated tokens per second of the whole call (prefill included), timed in alternation (`alternating`) after
warm-up calls. Run: `python -m qwen3jax.rl.bench` or `python -m qwen3jax.bench --only rl`.
"""

from __future__ import annotations

import itertools

import jax
import numpy as np
from flax import nnx

from qwen3jax.model.bench import BENCH_DENSE, ROUNDS, alternating, timed
from qwen3jax.rl.rows import rollout_rows
from qwen3jax.sample import generate
from qwen3jax.sample.engine import generation_memory
from qwen3jax.sample.bench import model_and_hf_copy
from qwen3jax.train.bench import ours_train

PROMPTS, SAMPLES, PROMPT_LEN, NEW_TOKENS = 8, 8, 64, 128
TARGET_SPEEDUP = 2.0


def rollout_benchmark() -> dict:
    import torch

    model, hf = model_and_hf_copy(BENCH_DENSE)
    prompts = np.random.default_rng(0).integers(0, BENCH_DENSE.vocab_size, (PROMPTS, PROMPT_LEN))
    input_ids = torch.as_tensor(prompts)
    seeds = itertools.count()

    def ours():
        return generate(model, prompts.tolist(), n=SAMPLES, max_new_tokens=NEW_TOKENS, temperature=1.0,
                        seed=next(seeds))  # fmt: skip

    def reference():
        torch.manual_seed(next(seeds))
        with torch.no_grad():
            return hf.generate(
                input_ids, attention_mask=torch.ones_like(input_ids), do_sample=True, temperature=1.0, top_k=0,
                top_p=1.0, num_return_sequences=SAMPLES, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS,
                use_cache=True, pad_token_id=0,
            )  # fmt: skip

    ours_s, hf_s, ratio = alternating(ours, reference, ROUNDS)
    sampled = ours()
    rows = rollout_rows(
        [list(p) for p in prompts for _ in range(SAMPLES)], sampled.tokens, sampled.logprobs, sampled.forced,
        np.random.default_rng(1).normal(size=PROMPTS * SAMPLES), np.ones(PROMPTS * SAMPLES, bool),
        seq_len=PROMPT_LEN + NEW_TOKENS,
    )  # fmt: skip
    update_s = timed(ours_train(BENCH_DENSE, rows, loss="grpo"), warmup=1, repeats=3)
    tokens = PROMPTS * SAMPLES * NEW_TOKENS
    memory = generation_memory(model, prompts.tolist(), n=SAMPLES, max_new_tokens=NEW_TOKENS, temperature=1.0)
    weights = sum(x.nbytes for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    row = {"rollout_tok_s": tokens / ours_s, "hf_tok_s": tokens / hf_s, "speedup_vs_hf": ratio,
           "update_s": update_s, "rollout_share": ours_s / (ours_s + update_s), "weights_mb": weights / 1e6,
           **{k.replace("_bytes", "_mb"): v / 1e6 for k, v in memory.items()}}  # fmt: skip
    print(
        f"rollout dense {PROMPTS} prompts x {SAMPLES} samples, prompt {PROMPT_LEN}, {NEW_TOKENS} new tokens (T=1): "
        f"ours {row['rollout_tok_s']:,.0f} tok/s, HF generate(num_return_sequences={SAMPLES}) "
        f"{row['hf_tok_s']:,.0f} tok/s, ratio {ratio:.2f}x (target >= {TARGET_SPEEDUP:g}x); one RL step = rollout "
        f"{ours_s:.2f} s + grpo update {update_s:.2f} s: {row['rollout_share']:.0%} in the rollout; the rollout "
        f"program reads the policy's {row['weights_mb']:.0f} MB of weights in place and holds "
        f"{row['temp_mb']:.0f} MB of temporaries (KV cache, the decode view's weight copy, activations)",
        flush=True,
    )
    return row


def run() -> list[dict]:
    """Entry point for `qwen3jax.bench`."""
    return [rollout_benchmark()]


if __name__ == "__main__":
    rollout_benchmark()

"""Decode throughput of `generate` vs HF transformers `generate` (torch, CPU, KV cache) on the same weights, same run.

Both generate greedily BATCH x NEW_TOKENS tokens after PROMPT_LEN-token prompts and never stop early; throughput is
generated tokens per second of wall time of the whole call (prefill included; compilation and first-call overheads
excluded by warm-up calls). The two are timed in alternation, round after round, so that load from other processes
on the machine hits both alike; the ratio reported is the median of the per-round ratios.
Run: `python -m qwen3jax.sample.bench`.
"""

from __future__ import annotations

import tempfile

import jax.numpy as jnp
import numpy as np
from flax import nnx

from qwen3jax.model import KVCache, Qwen3, create_model, decode_view
from qwen3jax.model.bench import BENCH_DENSE, alternating, report_floor
from qwen3jax.model.floor import Floor, matmul_floor
from qwen3jax.sample.engine import MIN_GENERATION_BUCKET, MIN_PROMPT_BUCKET, bucket, generate

BATCH, PROMPT_LEN, NEW_TOKENS = 8, 64, 128
ROUNDS = 5
TARGET_SPEEDUP = 3.0


def generate_floor(model: Qwen3) -> Floor:
    """The matmul floor of one `generate` call at the bench shapes: the prefill's products (its LM head is dropped,
    as XLA drops it in `generate`) and NEW_TOKENS decode steps' products over the whole cache."""
    cfg = model.config
    slots = bucket(PROMPT_LEN, MIN_PROMPT_BUCKET) + bucket(NEW_TOKENS, MIN_GENERATION_BUCKET) - 1  # as `generate`

    def run(graphdef, params, tokens, cache, head):
        positions = jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape)
        return nnx.merge(graphdef, params)(tokens, positions=positions, cache=cache, head=head)

    graphdef, params = nnx.split(model)
    prefill = matmul_floor(
        lambda p, t: run(graphdef, p, t, KVCache.init(cfg, BATCH, slots), head=False),
        params, jnp.zeros((BATCH, PROMPT_LEN - 1), jnp.int32),
    )  # fmt: skip
    graphdef, params = nnx.split(decode_view(model))
    step = matmul_floor(
        lambda p, t, c: run(graphdef, p, t, c, head=True),
        params, jnp.zeros((BATCH, 1), jnp.int32), KVCache.init(cfg, BATCH, slots).per_layer(),
    )  # fmt: skip
    return Floor(
        prefill.seconds + NEW_TOKENS * step.seconds, prefill.flops + NEW_TOKENS * step.flops,
        prefill.products + NEW_TOKENS * step.products,
    )  # fmt: skip


def model_and_hf_copy(cfg):
    """Our model (seed 0) and an HF transformers (torch) model holding the same weights, in eval mode."""
    from transformers import AutoModelForCausalLM

    from qwen3jax.convert import save_hf

    model = create_model(cfg, seed=0)
    with tempfile.TemporaryDirectory() as folder:
        save_hf(model, cfg, folder, overwrite=True)
        return model, AutoModelForCausalLM.from_pretrained(folder, attn_implementation="sdpa").eval()


def decode_benchmark() -> dict:
    import torch

    model, hf = model_and_hf_copy(BENCH_DENSE)
    prompts = np.random.default_rng(0).integers(0, BENCH_DENSE.vocab_size, (BATCH, PROMPT_LEN))
    input_ids = torch.as_tensor(prompts)

    def ours() -> list[list[int]]:
        return generate(model, prompts.tolist(), max_new_tokens=NEW_TOKENS).tokens

    def reference(new_tokens: int = NEW_TOKENS) -> list[list[int]]:
        with torch.no_grad():
            out = hf.generate(
                input_ids, attention_mask=torch.ones_like(input_ids), max_new_tokens=new_tokens,
                min_new_tokens=new_tokens, do_sample=False, use_cache=True, pad_token_id=0,
            )
        return out[:, PROMPT_LEN:].tolist()

    ours_tokens = ours()  # compiles
    hf_first = np.array(reference(1))[:, 0]
    ours_s, hf_s, ratio = alternating(ours, reference, ROUNDS)
    tokens = BATCH * NEW_TOKENS
    row = {
        "ours_tok_s": tokens / ours_s,
        "hf_tok_s": tokens / hf_s,
        "speedup_vs_hf": ratio,
        # Random weights give near-uniform logits, so round-off may flip an argmax after a while and the sequences
        # then diverge; the first tokens must agree.
        "first_token_agreement": float(np.mean(np.array(ours_tokens)[:, 0] == hf_first)),
    }
    print(
        f"decode dense batch {BATCH}, prompt {PROMPT_LEN}, {NEW_TOKENS} new tokens (greedy): ours "
        f"{row['ours_tok_s']:,.0f} tok/s, HF {row['hf_tok_s']:,.0f} tok/s, ratio {row['speedup_vs_hf']:.2f}x "
        f"(target >= {TARGET_SPEEDUP:g}x); first tokens agree on {row['first_token_agreement']:.0%} of rows",
        flush=True,
    )
    row |= report_floor("one generate call", generate_floor(model), ours_s, hf_s / TARGET_SPEEDUP)
    return row


def run() -> list[dict]:
    """Entry point for `qwen3jax.bench`."""
    return [decode_benchmark()]


if __name__ == "__main__":
    decode_benchmark()

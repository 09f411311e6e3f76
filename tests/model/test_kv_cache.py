"""Cached decode == full forward: prefill left-padded prompts, then decode one token at a time."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from qwen3jax.model import KVCache, decode_view

from .helpers import DENSE, MOE, build, forward, tokens


@pytest.mark.parametrize("cfg", [DENSE, MOE], ids=["dense", "moe"])
@pytest.mark.parametrize("mode", ["scan", "unrolled", "view"])
def test_cached_decode_matches_full_forward(cfg, mode):
    """`view`: prefill with the model, then decode with its `decode_view` over the per-layer cache (the sampler)."""
    cfg = cfg.replace(scan_layers=mode == "scan")
    model = build(cfg)
    prompt_lens, width, steps = [5, 3], 5, 4
    full = tokens(cfg, (2, width + steps), seed=4)
    # Row b holds its prompt right-aligned in `width` slots (left padding), then `steps` decoded tokens.
    prompts = jnp.stack([jnp.where(jnp.arange(width) >= width - n, full[b, :width], 0) for b, n in enumerate(prompt_lens)])
    pad = jnp.array([[0] * (width - n) + [1] * n for n in prompt_lens])
    positions = jnp.maximum(jnp.cumsum(pad, axis=1) - 1, 0)

    step = nnx.jit(lambda m, t, p, s, c: m(t, positions=p, segment_ids=s, cache=c))
    logits, cache = step(model, prompts, positions, pad, KVCache.init(cfg, 2, width + steps))
    decoded = [logits[:, -1]]
    next_pos = positions[:, -1] + 1
    if mode == "view":
        step = nnx.jit(lambda m, t, p, s, c: decode_view(m)(t, positions=p, segment_ids=s, cache=c))
        cache = cache.per_layer()
    for i in range(steps - 1):
        tok = full[:, width + i][:, None]
        logits, cache = step(model, tok, next_pos[:, None], jnp.ones((2, 1), jnp.int32), cache)
        decoded.append(logits[:, -1])
        next_pos = next_pos + 1
    assert int(cache.index) == width + steps - 1

    for b, n in enumerate(prompt_lens):
        # The same row without padding, run through the plain forward pass.
        seq = jnp.concatenate([full[b, width - n : width], full[b, width : width + steps - 1]])[None]
        reference = forward(model, seq)[0, n - 1 :]
        np.testing.assert_allclose(jnp.stack([d[b] for d in decoded]), reference, atol=1e-5, rtol=1e-5)


def test_cache_requires_positions():
    model = build(DENSE)
    with pytest.raises(ValueError, match="positions"):
        model(tokens(DENSE, (1, 2)), cache=KVCache.init(DENSE, 1, 4))


def test_per_layer_cache_needs_unrolled_layers():
    model = build(DENSE)  # scanned
    cache = KVCache.init(DENSE, 1, 4).per_layer()
    with pytest.raises(ValueError, match="per-layer KV cache"):
        model(tokens(DENSE, (1, 2)), positions=jnp.zeros((1, 2), jnp.int32), cache=cache)

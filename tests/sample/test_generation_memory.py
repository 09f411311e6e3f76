"""The rollout program's memory (what the RL bench reports) against a formula: it reads the weights in place (its
arguments are the weights plus a few small inputs), and its temporaries are the KV cache of every sampled row plus
at most one re-laid-out copy of the weights (the decode view) and small activations, never a second weight copy."""

import jax
import numpy as np
import pytest
from flax import nnx

from qwen3jax.model import create_model
from qwen3jax.model.config import ModelConfig
from qwen3jax.sample.engine import MIN_GENERATION_BUCKET, MIN_PROMPT_BUCKET, bucket, generation_memory

CONFIG = ModelConfig(vocab_size=4096, hidden_size=256, intermediate_size=768, num_layers=4, num_heads=4,
                     num_kv_heads=2, head_dim=64, tie_word_embeddings=False)  # fmt: skip


@pytest.mark.parametrize("rows, n, new_tokens", [(8, 8, 128), (8, 8, 256)])
def test_rollout_memory_is_the_kv_cache_plus_one_weight_copy(rows, n, new_tokens):
    model = create_model(CONFIG)
    weights = sum(x.nbytes for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    memory = generation_memory(model, [[5] * 20] * rows, max_new_tokens=new_tokens, n=n, temperature=1.0)
    cache_len = bucket(20, MIN_PROMPT_BUCKET) + bucket(new_tokens, MIN_GENERATION_BUCKET) - 1
    itemsize = np.dtype(CONFIG.dtype).itemsize
    kv_cache = 2 * CONFIG.num_layers * rows * n * cache_len * CONFIG.num_kv_heads * CONFIG.head_dim * itemsize
    assert weights <= memory["argument_bytes"] <= weights + 64 * 1024
    assert kv_cache <= memory["temp_bytes"] <= kv_cache + 1.25 * weights, (memory, kv_cache, weights)

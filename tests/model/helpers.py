"""Small shared builders for model tests."""

import jax
import jax.numpy as jnp
from flax import nnx

from qwen3jax.model import ModelConfig, Qwen3

# Smaller than the `tiny` presets so that every equivalence test compiles in seconds.
DENSE = ModelConfig.from_preset(
    "tiny", vocab_size=128, hidden_size=32, intermediate_size=48, num_layers=3, num_heads=4, num_kv_heads=2,
    head_dim=16, tie_word_embeddings=False,
)
MOE = DENSE.replace(num_experts=8, num_experts_per_tok=2, moe_intermediate_size=24, mlp_only_layers=(1,))


def build(cfg: ModelConfig, seed: int = 0) -> Qwen3:
    return Qwen3(cfg, rngs=nnx.Rngs(seed))


def tokens(cfg: ModelConfig, shape, seed: int = 1) -> jax.Array:
    return jax.random.randint(jax.random.key(seed), shape, 0, cfg.vocab_size)


def loss_and_grads(model: Qwen3, toks, **kw):
    """A scalar that depends on every logit, and its gradient w.r.t. every parameter."""

    def loss(m):
        logits = m(toks, **kw)
        return jnp.mean(jax.nn.log_softmax(logits)[..., 0] * jnp.cos(logits[..., 1]))

    value, grads = nnx.jit(nnx.value_and_grad(loss))(model)
    return value, nnx.to_pure_dict(grads)


def forward(model: Qwen3, toks, **kw):
    return nnx.jit(lambda m, t, kw: m(t, **kw))(model, toks, kw)

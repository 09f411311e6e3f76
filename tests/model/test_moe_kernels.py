"""Every MoE dispatch kernel equals the naive per-expert oracle, in values and in gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qwen3jax.model.moe import get_kernel

S, K, E, D, F = 37, 2, 6, 16, 24  # odd token count: exercises partial blocks and padding


def _inputs(seed=0, skew=False):
    ks = jax.random.split(jax.random.key(seed), 6)
    x = jax.random.normal(ks[0], (S, D))
    logits = jax.random.normal(ks[1], (S, E)) * 2
    if skew:  # most tokens to expert 0 and none to expert 5: empty and oversized groups
        logits = logits.at[:, 0].add(4.0).at[:, 5].add(-50.0)
    w, idx = jax.lax.top_k(jax.nn.softmax(logits), K)
    params = [jax.random.normal(k, shape) * 0.2 for k, shape in zip(ks[2:5], [(E, D, F), (E, D, F), (E, F, D)])]
    return x, idx, w, params


KERNELS = [("sorted", 8), ("sorted", 64), ("looped", 8), ("looped", 64), ("ragged", 0), ("megablox", 0)]


@pytest.mark.parametrize("name,block", KERNELS)
@pytest.mark.parametrize("skew", [False, True])
def test_kernel_matches_oracle(name, block, skew):
    x, idx, w, params = _inputs(skew=skew)
    oracle = get_kernel("naive", 0)
    kernel = get_kernel(name, block)
    np.testing.assert_allclose(kernel(x, idx, w, *params), oracle(x, idx, w, *params), rtol=1e-5, atol=1e-5)

    def loss(fn):
        def f(x, w, *p):
            return jnp.sum(jnp.sin(fn(x, idx, w, *p)))

        return jax.grad(f, argnums=(0, 1, 2, 3, 4))(x, w, *params)

    for got, want in zip(loss(kernel), loss(oracle)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["sorted", "looped"])
def test_blocked_kernels_under_jit_and_all_tokens_one_expert(name):
    x, _, w, params = _inputs()
    idx = jnp.stack([jnp.zeros(S, jnp.int32), jnp.ones(S, jnp.int32)], axis=1)
    want = get_kernel("naive", 0)(x, idx, w, *params)
    got = jax.jit(get_kernel(name, 8))(x, idx, w, *params)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_looped_kernel_in_bfloat16_keeps_dtypes_and_tracks_the_fp32_oracle():
    x, idx, w, params = _inputs(skew=True)

    def grads(kernel, dtype):
        def f(x, w, *p):
            return jnp.sum(jnp.sin(kernel(x, idx, w, *p).astype(jnp.float32)))

        args = [a.astype(dtype) for a in (x, w, *params)]
        return jax.jit(jax.grad(f, argnums=(0, 1, 2, 3, 4)))(*args)

    got = grads(get_kernel("looped", 8), jnp.bfloat16)
    want = grads(get_kernel("naive", 0), jnp.float32)
    for g, r in zip(got, want):
        assert g.dtype == jnp.bfloat16
        np.testing.assert_allclose(g.astype(jnp.float32), r, rtol=5e-2, atol=5e-2 * float(jnp.abs(r).max()))

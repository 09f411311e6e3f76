"""The Pallas splash-attention kernel (model/splash.py), run in interpret mode on CPU: equal to a NumPy attention
written from the definition, and a model using it equal to the einsum attention (values and gradients), unsharded
and inside shard_map on simulated 8-device meshes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qwen3jax.model import create_model
from qwen3jax.model.splash import resolve_kernel, splash_attention
from qwen3jax.parallel import make_mesh

from .helpers import DENSE, loss_and_grads, tokens

T = 128  # the kernel's smallest tile


def _segments(batch: int) -> np.ndarray:
    """Packed rows: several documents of different lengths, and padding (segment 0) at the end of some rows."""
    seg = np.ones((batch, T), np.int32)
    for row in range(batch):
        cuts = sorted({17 + 13 * row, 60 + 5 * row, 101})
        for i, cut in enumerate(cuts):
            seg[row, cut:] = i + 2
        if row % 2:
            seg[row, 120 - row :] = 0
    return seg


def _numpy_attention(q, k, v, seg):
    """softmax over keys s <= t of the same segment, per query head; query head i reads KV head i // (N / K)."""
    b, t, n, h = q.shape
    groups = n // k.shape[2]
    out = np.zeros_like(q)
    for r in range(b):
        for head in range(n):
            for i in range(t):
                keys = [j for j in range(i + 1) if seg[r, j] == seg[r, i]]
                logits = np.array([q[r, i, head] @ k[r, j, head // groups] for j in keys])
                weights = np.exp(logits - logits.max())
                out[r, i, head] = (weights / weights.sum()) @ v[r, keys, head // groups]
    return out


def test_kernel_equals_numpy_attention_with_documents_and_gqa():
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((2, T, n, 32)).astype(np.float32) for n in (4, 2, 2))
    seg = _segments(2)
    out = jax.jit(splash_attention)(q, k, v, seg)
    np.testing.assert_allclose(out, _numpy_attention(q, k, v, seg), rtol=2e-5, atol=2e-5)


@pytest.fixture(scope="module")
def einsum_reference():
    """Loss and gradients of the model with the einsum attention, unsharded."""
    seg = jnp.asarray(_segments(4))
    return loss_and_grads(create_model(DENSE, seed=0), tokens(DENSE, (4, T)), segment_ids=seg)


@pytest.mark.parametrize(
    "mesh_spec",
    [None, pytest.param({"data": 2, "fsdp": 2, "tensor": 2}, marks=pytest.mark.slow),
     pytest.param({"fsdp": 2, "tensor": 4}, marks=pytest.mark.slow)],
    ids=["unsharded", "batch4_heads2", "batch2_heads_replicated"],  # tensor=4 does not divide the 2 KV heads
)
def test_model_with_kernel_equals_einsum_attention(einsum_reference, mesh_spec):
    cfg = DENSE.replace(attention_kernel="splash")
    seg = jnp.asarray(_segments(4))
    if mesh_spec is None:
        value, grads = loss_and_grads(create_model(cfg, seed=0), tokens(cfg, (4, T)), segment_ids=seg)
    else:
        mesh = make_mesh(mesh_spec)
        with jax.set_mesh(mesh):
            value, grads = loss_and_grads(create_model(cfg, seed=0, mesh=mesh), tokens(cfg, (4, T)), segment_ids=seg)
    ref_value, ref_grads = einsum_reference
    np.testing.assert_allclose(value, ref_value, rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-6), grads, ref_grads)


def test_kernel_choice_and_bad_lengths():
    assert resolve_kernel("auto", "tpu") == "splash" and resolve_kernel("auto", "cpu") == "xla"
    assert resolve_kernel("xla", "tpu") == "xla"
    with pytest.raises(ValueError, match="multiple of 128"):
        q = jnp.zeros((1, 100, 2, 8))
        splash_attention(q, q, q, jnp.ones((1, 100), jnp.int32))
    with pytest.raises(ValueError, match="attention_kernel='flash'"):
        DENSE.replace(attention_kernel="flash")

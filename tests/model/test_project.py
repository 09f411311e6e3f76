"""`layers.project` == the einsum it stands for, for every weight layout and both sides of FEW_ROWS."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from qwen3jax.model.layers import FEW_ROWS, OutputMajor, project

CASES = [  # spec, x shape, weight shape (as the spec names it), output-major copy's axis order
    ("BTD,DF->BTF", (2, 3, 8), (8, 12), (1, 0)),
    ("BTD,DNH->BTNH", (2, 3, 8), (8, 4, 6), (1, 2, 0)),
    ("BTNH,NHD->BTD", (2, 3, 4, 6), (4, 6, 8), (2, 0, 1)),
    ("BTD,VD->BTV", (2, 3, 8), (16, 8), None),  # a tied head: the embedding table is already output-first
]


@pytest.mark.parametrize("spec,x_shape,w_shape,order", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("rows", [1, FEW_ROWS + 1], ids=["few_rows", "many_rows"])
def test_project_equals_einsum(spec, x_shape, w_shape, order, rows):
    x = jax.random.normal(jax.random.key(0), (rows, *x_shape[1:]))
    w = jax.random.normal(jax.random.key(1), w_shape)
    expected = jnp.einsum(spec, x, w, precision="highest")
    np.testing.assert_allclose(project(spec, x, nnx.Param(w), jnp.float32), expected, rtol=1e-5, atol=1e-5)
    if order is not None:
        copy = OutputMajor(w.transpose(order))
        np.testing.assert_allclose(project(spec, x, copy, jnp.float32), expected, rtol=1e-5, atol=1e-5)


def test_project_casts_and_accumulates_as_asked():
    x = jax.random.normal(jax.random.key(0), (2, 3, 8))
    w = nnx.Param(jax.random.normal(jax.random.key(1), (8, 12)))
    y = project("BTD,DF->BTF", x.astype(jnp.bfloat16), w, jnp.bfloat16, preferred_element_type=jnp.float32)
    assert y.dtype == jnp.float32
    assert project("BTD,DF->BTF", x.astype(jnp.bfloat16), w, jnp.bfloat16).dtype == jnp.bfloat16  # weight cast


def test_project_rejects_specs_it_cannot_flatten():
    x, w = jnp.ones((3, 8, 2)), nnx.Param(jnp.ones((8, 5)))
    with pytest.raises(ValueError, match="rows then its contracted axes"):
        project("TDB,DF->TBF", x, w, jnp.float32)


@pytest.mark.parametrize("dtype,accumulate", [(jnp.float32, None), (jnp.bfloat16, jnp.float32)], ids=["fp32", "bf16"])
def test_project_gradients_equal_einsum_gradients(dtype, accumulate):
    """The CPU path's custom weight gradient (a product of a materialised x^T) == autodiff of the einsum: exactly
    in fp32; in bf16 both are within bf16 round-off of the fp32 gradients of the same (rounded) inputs."""
    x = jax.random.normal(jax.random.key(0), (2, 5, 8)).astype(dtype)
    w = jax.random.normal(jax.random.key(1), (8, 40)).astype(dtype).astype(jnp.float32)  # wide: the custom VJP
    cotangent = jax.random.normal(jax.random.key(2), (2, 5, 40))

    def ours(x, w):
        return jnp.sum(project("BTD,DF->BTF", x, nnx.Param(w), dtype, preferred_element_type=accumulate) * cotangent)

    def einsum_loss(x, w, dtype):
        y = jnp.einsum("BTD,DF->BTF", x.astype(dtype), w.astype(dtype), preferred_element_type=accumulate)
        return jnp.sum(y * cotangent)

    got = jax.grad(ours, (0, 1))(x, w)
    expected = jax.grad(einsum_loss, (0, 1))(x, w, dtype)
    assert [g.dtype for g in got] == [e.dtype for e in expected]
    if dtype == jnp.float32:
        for g, e in zip(got, expected):
            np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-5)
    else:
        exact = jax.grad(einsum_loss, (0, 1))(x.astype(jnp.float32), w, jnp.float32)
        for g, e in zip(got, exact):
            np.testing.assert_allclose(np.asarray(g, np.float32), e, atol=2e-2 * float(jnp.abs(e).max()))

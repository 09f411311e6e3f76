"""The matmul floor's list of products: every product a program runs, counted as often as it runs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qwen3jax.model.bench import BATCH, BENCH_DENSE, BENCH_MOE, SEQ, floor_config, fwd_bwd_program
from qwen3jax.model.floor import Product, matmul_floor, products


F32 = np.dtype("float32")  # products' preferred element type as the jaxpr records it


def _sds(*shape):
    return jax.ShapeDtypeStruct(shape, jnp.float32)


def test_products_counts_scan_iterations_cond_branches_and_gradients():
    def fn(x, w_stack, w):
        def body(h, w_i):
            return jnp.tanh(h @ w_i), None

        h, _ = jax.lax.scan(body, x, w_stack)  # 3 iterations of [4, 8] @ [8, 8]
        h = jax.lax.cond(h.sum() > 0, lambda h: h @ w, lambda h: 2 * h @ w, h)  # either branch: one [4, 8] @ [8, 16]
        return jnp.einsum("bi,bi->b", h, h).sum()  # a batched product

    args = (jnp.ones((4, 8)), jnp.ones((3, 8, 8)), jnp.ones((8, 16)))
    plain = (((1,), (0,)), ((), ()))
    assert products(fn, *args) == {
        Product(_sds(4, 8), _sds(8, 8), plain, F32): 3,
        Product(_sds(4, 8), _sds(8, 16), plain, F32): 1,
        Product(_sds(4, 16), _sds(4, 16), (((1,), (1,)), ((0,), (0,))), F32): 1,
    }
    # Reverse mode: each product of the forward pass gets two more (input and weight gradients), also per iteration.
    grads = products(jax.grad(fn, argnums=(0, 1, 2)), *args)
    assert sum(grads.values()) == 3 * 5
    assert sum(p.flops * n for p, n in grads.items()) == 3 * (3 * 2 * 4 * 8 * 8 + 2 * 4 * 8 * 16 + 2 * 4 * 16)


def test_flops_of_a_batched_product_with_two_contracted_axes():
    product = Product(_sds(2, 3, 5, 7), _sds(2, 7, 5, 11), (((2, 3), (2, 1)), ((0,), (0,))), F32)
    assert product.flops == 2 * 2 * 3 * 11 * 5 * 7


def test_products_without_a_static_count_are_refused():
    loop = lambda x, w, n: jax.lax.fori_loop(0, n, lambda i, h: h @ w, x)  # noqa: E731
    with pytest.raises(ValueError, match="'while' with products inside"):
        products(loop, jnp.ones((2, 2)), jnp.ones((2, 2)), 3)
    branches = lambda x, w: jax.lax.cond(x.sum() > 0, lambda: x @ w, lambda: x)  # noqa: E731
    with pytest.raises(ValueError, match="'cond' with products inside"):
        products(branches, jnp.ones((2, 2)), jnp.ones((2, 2)))
    # A loop without products (e.g. an optimizer's bookkeeping) is fine.
    counted = lambda x, w, n: jax.lax.fori_loop(0, n, lambda i, h: h + 1, x) @ w  # noqa: E731
    assert sum(products(counted, jnp.ones((2, 2)), jnp.ones((2, 2)), 3).values()) == 1


def test_matmul_floor_sums_every_run_of_every_product():
    fn = lambda x, w: jax.lax.scan(lambda h, _: (h @ w, None), x, None, length=4)[0]  # noqa: E731
    floor = matmul_floor(fn, jnp.ones((16, 32)), jnp.ones((32, 32)), repeats=1)
    assert floor.products == 4 and floor.flops == 4 * 2 * 16 * 32 * 32 and 0 < floor.seconds < 10


def test_bench_step_products_match_the_flops_formula():
    """Two independent counts of the bench step's work agree: the products in its jaxpr and
    `ModelConfig.flops_per_token` (which halves causal attention exactly, where the blocked attention computes the
    diagonal blocks whole: 1.2% more)."""
    tokens = np.zeros((BATCH, SEQ + 1), np.int32)
    step, params = fwd_bwd_program(BENCH_DENSE)
    counted = sum(p.flops * n for p, n in products(step, params, tokens).items())
    formula = BENCH_DENSE.flops_per_token(SEQ) * BATCH * SEQ
    assert formula < counted < 1.02 * formula


def test_moe_floor_config_has_the_active_expert_flops():
    dense = floor_config(BENCH_MOE)
    assert not dense.is_moe and dense.intermediate_size == BENCH_MOE.num_experts_per_tok * BENCH_MOE.moe_intermediate_size
    router = 3 * 2 * BENCH_MOE.num_layers * BENCH_MOE.hidden_size * BENCH_MOE.num_experts
    assert dense.flops_per_token(SEQ) == pytest.approx(BENCH_MOE.flops_per_token(SEQ) - router, rel=1e-3)
    assert floor_config(BENCH_DENSE) is BENCH_DENSE

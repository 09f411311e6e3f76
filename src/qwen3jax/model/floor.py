"""The matmul floor of a program: what its matrix products alone cost on this backend.

Every `dot_general` in the program's jaxpr (scan bodies counted once per iteration) is timed as its own jitted call,
with the same operand shapes, dtypes and dimension numbers, and the times are summed. A step can only be faster than
its floor by running products concurrently or by XLA fusing them into something faster, so `step time / floor` says
how much of a step is *not* the products (attention softmax, norms, elementwise work, layout copies, scheduling) and
the floor says what the products need at best, e.g. whether a throughput target is reachable with the backend's
GEMM kernels at all. Benchmarks print it next to the measured step.

Operands are cycled through copies totalling at least `COLD_BYTES` (more than the last-level cache of usual CPUs),
because in a real step the weights of a decode product come from memory, not from a cache that a lone call in a
loop would keep warm; several products per call also amortise the per-call dispatch overhead of tiny products.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jex

COLD_BYTES = 64 * 2**20
MAX_COPIES = 64


class Product(NamedTuple):
    """One distinct matrix product of a program."""

    lhs: jax.ShapeDtypeStruct
    rhs: jax.ShapeDtypeStruct
    dimension_numbers: tuple
    preferred_element_type: object

    @property
    def flops(self) -> int:
        (lhs_contract, rhs_contract), (lhs_batch, rhs_batch) = self.dimension_numbers
        lhs_free = [n for i, n in enumerate(self.lhs.shape) if i not in (*lhs_contract, *lhs_batch)]
        rhs_free = [n for i, n in enumerate(self.rhs.shape) if i not in (*rhs_contract, *rhs_batch)]
        contracted = [self.lhs.shape[i] for i in lhs_contract]
        batch = [self.lhs.shape[i] for i in lhs_batch]
        return 2 * math.prod(batch) * math.prod(lhs_free) * math.prod(rhs_free) * math.prod(contracted)


class Floor(NamedTuple):
    seconds: float  # the products' summed time, each timed alone
    flops: int  # their summed FLOPs
    products: int  # how many run (distinct ones times how often each runs)


def products(fn, *args) -> Counter:
    """Every matrix product `fn(*args)` runs, with how many times it runs (scan bodies times their length)."""
    counts: Counter = Counter()
    _collect(jax.make_jaxpr(fn)(*args).jaxpr, 1, counts)
    return counts


def _collect(jaxpr, times: int, counts: Counter) -> None:
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name == "dot_general":
            lhs, rhs = (jax.ShapeDtypeStruct(v.aval.shape, v.aval.dtype) for v in eqn.invars)
            counts[Product(lhs, rhs, eqn.params["dimension_numbers"], eqn.params["preferred_element_type"])] += times
            continue
        inner = list(jex.jaxprs_in_params(eqn.params))
        if name in ("while", "cond"):
            # A while loop's trip count is a run-time value and a cond runs one of its branches: a static count
            # exists only when every branch (a loop's condition and body) runs the same products, e.g. none.
            branches = [Counter() for _ in inner]
            for sub, found in zip(inner, branches):
                _collect(sub, times, found)
            if (name == "while" and any(branches)) or any(found != branches[0] for found in branches):
                raise ValueError(f"the matmul floor needs a static list of products; the program has a {name!r} "
                                 "with products inside (e.g. a data-dependent MoE kernel loop)")  # fmt: skip
            counts.update(branches[0])
            continue
        repeat = eqn.params["length"] if name == "scan" else 1
        for sub in inner:
            _collect(sub, times * repeat, counts)


def matmul_floor(fn, *args, repeats: int = 5) -> Floor:
    """The summed time of `fn(*args)`'s products, each timed alone (best of `repeats` calls, cold operands)."""
    seconds = flops = count = 0
    for product, times in products(fn, *args).items():
        seconds += times * time_product(product, repeats)
        flops += times * product.flops
        count += times
    return Floor(seconds, flops, count)


def time_product(product: Product, repeats: int) -> float:
    """Seconds of one product run alone, its operands cycled through copies beyond the cache (see module doc)."""
    nbytes = sum(math.prod(a.shape) * jnp.dtype(a.dtype).itemsize for a in (product.lhs, product.rhs))
    copies = int(min(MAX_COPIES, max(1, -(-COLD_BYTES // max(nbytes, 1)))))
    rng = np.random.default_rng(0)
    operands = [
        tuple(jnp.asarray(rng.standard_normal(a.shape, np.float32), a.dtype) for a in (product.lhs, product.rhs))
        for _ in range(copies)
    ]

    @jax.jit
    def run(operands):
        return [
            jax.lax.dot_general(lhs, rhs, product.dimension_numbers, preferred_element_type=product.preferred_element_type)
            for lhs, rhs in operands
        ]

    jax.block_until_ready(run(operands))
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(run(operands))
        best = min(best, time.perf_counter() - start)
    return best / copies

"""Logical axis names → mesh axes: the one table that decides how parameters and activations are sharded.

Modules name every dimension logically (`embed`, `mlp`, `q_heads`, `experts`, `batch`, ...); nothing else in the
code base mentions mesh axes. A mesh axis is only used for a dimension when it divides that dimension and no earlier
dimension of the same array already uses it, so tiny models on large meshes replicate instead of failing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

Rules = tuple[tuple[str, tuple[str, ...]], ...]

DEFAULT_RULES: Rules = (
    # Parameters.
    ("vocab", ("tensor",)),
    # Hidden dim of weights: ZeRO-3 sharding over fsdp, and over expert ranks too (they are data parallel for every
    # non-expert weight; expert weights already use the expert axis for their expert dim, so it is skipped there).
    ("embed", ("fsdp", "expert")),
    ("q_heads", ("tensor",)),
    ("kv_heads", ("tensor",)),
    ("head_dim", ()),
    ("mlp", ("tensor",)),
    ("experts", ("expert",)),
    ("expert_mlp", ("tensor",)),
    ("layers", ()),
    ("norm", ()),
    # Activations. The batch is split over every axis that does not split the model's width, so dense layers see
    # expert and fsdp ranks as extra data parallelism.
    ("batch", ("data", "fsdp", "expert")),
    ("seq", ("context",)),
    ("act_embed", ()),
    ("act_heads", ("tensor",)),
    ("act_kv_heads", ("tensor",)),
    ("act_mlp", ("tensor",)),
    ("act_vocab", ("tensor",)),
    # Flattened batch*seq inside the MoE layer: batch-major, so the batch axes then `context` keep each device's
    # tokens where they are.
    ("tokens", ("data", "fsdp", "expert", "context")),
)

def logical_to_spec(axes: Sequence[str | None], shape: Sequence[int], mesh_shape: dict[str, int]) -> PartitionSpec:
    """Map one array's logical axes to a PartitionSpec on a mesh with the given axis sizes."""
    if len(axes) != len(shape):
        raise ValueError(f"logical axes {tuple(axes)} do not match an array of rank {len(shape)}")
    table = dict(DEFAULT_RULES)
    used: set[str] = set()
    spec = []
    for name, size in zip(axes, shape):
        if name is not None and name not in table:
            raise KeyError(f"logical axis {name!r} has no rule; known: {sorted(table)}")
        candidates = [a for a in table.get(name, ()) if mesh_shape.get(a, 1) > 1 and a not in used]
        # Drop trailing mesh axes until the product divides the dimension (replicate what cannot be split).
        while candidates and size % math.prod(mesh_shape[a] for a in candidates):
            candidates.pop()
        used.update(candidates)
        spec.append(None if not candidates else candidates[0] if len(candidates) == 1 else tuple(candidates))
    return PartitionSpec(*spec)


def constrain(x: jax.Array, axes: Sequence[str | None]) -> jax.Array:
    """Sharding constraint on an activation by logical axes, against the mesh set with `jax.set_mesh`.

    Without a mesh there is no device layout to express (a single-device program), so the array is returned as is.
    """
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        return x
    return jax.lax.with_sharding_constraint(x, logical_to_spec(axes, x.shape, dict(mesh.shape)))


def logical_axes(variable: nnx.Variable) -> tuple[str | None, ...]:
    """The logical axes recorded on a parameter (`axes` metadata), or all-None for unannotated variables."""
    axes = variable.get_metadata().get("axes")
    return tuple(axes) if axes is not None else (None,) * len(variable.shape)


def state_shardings(state: nnx.State, mesh: Mesh) -> nnx.State:
    """NamedShardings for every variable of an (abstract or concrete) NNX state, from its logical axes."""
    mesh_shape = dict(mesh.shape)

    def one(v):
        return NamedSharding(mesh, logical_to_spec(logical_axes(v), v.shape, mesh_shape))

    return jax.tree.map(lambda v: v.replace(one(v)), state, is_leaf=lambda x: isinstance(x, nnx.Variable))

"""Device meshes and the logical-axis → mesh-axis sharding rules."""

from qwen3jax.parallel.mesh import MESH_AXES, make_mesh, mesh_shape_from
from qwen3jax.parallel.rules import DEFAULT_RULES, constrain, logical_to_spec, state_shardings

__all__ = [
    "MESH_AXES",
    "make_mesh",
    "mesh_shape_from",
    "DEFAULT_RULES",
    "constrain",
    "logical_to_spec",
    "state_shardings",
]

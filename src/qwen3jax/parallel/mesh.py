"""Build device meshes from a config: named axes `data, fsdp, expert, context, tensor`, Auto axis types.

Axis order puts `tensor` innermost so that the most communication-heavy axis maps onto neighbouring devices
(jax.make_mesh orders devices for the physical topology on TPU).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import jax
from jax.sharding import AxisType, Mesh

MESH_AXES = ("data", "fsdp", "expert", "context", "tensor")


def mesh_shape_from(spec: Mapping[str, int], num_devices: int) -> dict[str, int]:
    """Resolve a partial axis spec to all five axes; one axis may be -1 ("whatever is left").

    Raises ValueError naming the problem when the axes are unknown or do not multiply to the device count.
    """
    unknown = set(spec) - set(MESH_AXES)
    if unknown:
        raise ValueError(f"unknown mesh axes {sorted(unknown)}; valid axes are {MESH_AXES}")
    shape = {axis: int(spec.get(axis, 1)) for axis in MESH_AXES}
    fill = [axis for axis, size in shape.items() if size == -1]
    if len(fill) > 1:
        raise ValueError(f"at most one mesh axis may be -1, got {fill}")
    if bad := {a: s for a, s in shape.items() if s == 0 or s < -1}:
        raise ValueError(f"mesh axis sizes must be positive (or -1 for one axis), got {bad}")
    fixed = math.prod(size for size in shape.values() if size != -1)
    if fill:
        if num_devices % fixed:
            raise ValueError(
                f"mesh {_fmt(shape)} cannot fill {num_devices} devices: the fixed axes multiply to {fixed}, "
                f"which does not divide {num_devices}"
            )
        shape[fill[0]] = num_devices // fixed
    elif fixed != num_devices:
        raise ValueError(
            f"mesh {_fmt(shape)} needs {fixed} devices but {num_devices} are available; "
            f"make the axis sizes multiply to {num_devices} or set one axis to -1"
        )
    return shape


def make_mesh(spec: Mapping[str, int] | None = None, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A mesh over `devices` (default: all) with Auto axis types; `spec` defaults to pure data parallelism."""
    devices = list(devices) if devices is not None else jax.devices()
    shape = mesh_shape_from(spec if spec is not None else {"data": -1}, len(devices))
    sizes = tuple(shape[a] for a in MESH_AXES)
    # Auto, not Explicit: jax's Explicit default rejects ordinary matmuls whose contracting dims are sharded.
    return jax.make_mesh(sizes, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES), devices=devices)


def _fmt(shape: Mapping[str, int]) -> str:
    return "{" + ", ".join(f"{a}={s}" for a, s in shape.items() if s != 1) + "}" if any(
        s != 1 for s in shape.values()
    ) else "{all axes 1}"

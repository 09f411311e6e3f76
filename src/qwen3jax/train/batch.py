"""What a global batch holds, declared by the loss: fields with dtype and logical axes (`BatchSpec`), and their
global shapes and shardings on a mesh (`BatchLayout`). The loop, the shardings of the jitted step, `aot` and the
batch sources read the spec; nothing assumes a fixed set of fields.

A field's logical axes are names of `parallel/rules.py` ("batch", "seq", ...); `BatchLayout.sizes` gives each name
its length for a run (global batch, sequence length; a rollout source may add e.g. "completions"), so
`Field(jnp.float32, ("batch",))` is a per-sequence float (GRPO advantages) and `Field(jnp.float32, ("batch", "seq"))`
a per-token one (old log-probs).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding

from qwen3jax.data.records import PACKED_FIELDS
from qwen3jax.parallel.rules import logical_to_spec


@dataclasses.dataclass(frozen=True)
class Field:
    dtype: np.dtype | type
    axes: tuple[str, ...]  # logical axis names, the first always "batch" (micro-batching splits it)

    def __post_init__(self):
        if not self.axes or self.axes[0] != "batch":
            raise ValueError(f"a batch field's first axis must be 'batch' (micro-batches split it), got {self.axes}")


BatchSpec = Mapping[str, Field]

# Packed sequences (text or chat): the contract of `data/packing.py`.
TOKEN_FIELDS: BatchSpec = {name: Field(np.int32, ("batch", "seq")) for name in PACKED_FIELDS}


@dataclasses.dataclass(frozen=True)
class BatchLayout:
    """Global shapes, shardings and process-local → global assembly of the fields of `spec` on `mesh`."""

    spec: BatchSpec
    mesh: Mesh
    sizes: Mapping[str, int]  # logical axis name → length, e.g. {"batch": 512, "seq": 4096}

    def shape(self, name: str) -> tuple[int, ...]:
        missing = [a for a in self.spec[name].axes if a not in self.sizes]
        if missing:
            raise KeyError(f"batch field {name!r}: no length for logical axes {missing}; known: {sorted(self.sizes)}")
        return tuple(self.sizes[a] for a in self.spec[name].axes)

    def sharding(self, name: str) -> NamedSharding:
        shape = self.shape(name)
        return NamedSharding(self.mesh, logical_to_spec(self.spec[name].axes, shape, dict(self.mesh.shape)))

    def shardings(self) -> dict[str, NamedSharding]:
        return {name: self.sharding(name) for name in self.spec}

    def abstract(self) -> dict[str, jax.ShapeDtypeStruct]:
        """The batch as sharded shapes (for `aot` and lowering without data)."""
        return {
            name: jax.ShapeDtypeStruct(self.shape(name), field.dtype, sharding=self.sharding(name))
            for name, field in self.spec.items()
        }

    def to_global(self, local: Mapping[str, np.ndarray]) -> dict[str, jax.Array]:
        """One global batch from this process's rows (its contiguous share of the batch axis). Fields must match
        the spec exactly: a source that forgets one, or adds one the loss does not read, is named here."""
        if set(local) != set(self.spec):
            raise ValueError(
                f"the batch source gives fields {sorted(local)} but the loss needs {sorted(self.spec)} "
                f"(missing: {sorted(set(self.spec) - set(local))}, unexpected: {sorted(set(local) - set(self.spec))})"
            )
        return {
            name: jax.make_array_from_process_local_data(
                self.sharding(name), np.asarray(local[name], self.spec[name].dtype), self.shape(name)
            )
            for name in self.spec
        }

"""What the HF and native converters share: the error type, runtime overrides, abstract model construction and
target placement, and the "never overwrite silently" rule for output directories."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_dtypes  # noqa: F401  registers bfloat16 with numpy, so np.dtype('bfloat16') works
import numpy as np
from flax import nnx, traverse_util
from jax.sharding import Mesh
from tqdm import tqdm

from qwen3jax.model import ModelConfig, Qwen3
from qwen3jax.parallel import state_shardings


class CheckpointError(ValueError):
    """A checkpoint cannot be read or written as asked; the message names the file, tensor or field at fault."""


# Fields that change how weights are stored or run, never which weights exist; a loader may override these.
RUNTIME_FIELDS = (
    "param_dtype", "dtype", "remat", "scan_layers", "attention_block_size", "moe_kernel", "moe_block_size",
    "moe_expert_exchange", "moe_capacity_factor",
    # long context at inference: YaRN, Dual Chunk Attention and the longer context they allow
    "rope_scaling", "dual_chunk", "max_position_embeddings",
)


def apply_overrides(cfg: ModelConfig, overrides: dict[str, Any]) -> ModelConfig:
    """`cfg` with runtime fields replaced; architecture fields come from the checkpoint and cannot be overridden."""
    if bad := sorted(set(overrides) - set(RUNTIME_FIELDS)):
        raise CheckpointError(f"cannot override {bad} when loading a checkpoint; allowed: {', '.join(RUNTIME_FIELDS)}")
    overrides = {k: v for k, v in overrides.items() if v is not None}
    for field in ("param_dtype", "dtype"):
        if field in overrides:
            overrides[field] = float_dtype(overrides[field]).name
    return cfg.replace(**overrides)


def float_dtype(name: str) -> np.dtype:
    """The numpy dtype called `name`, which must be a floating type (bfloat16 included)."""
    try:
        dtype = np.dtype(name)
    except TypeError:
        dtype = None
    if dtype is None or not jnp.issubdtype(dtype, jnp.floating):  # jnp's check, unlike numpy's, knows bfloat16
        raise CheckpointError(f"{name!r} is not a floating-point dtype (e.g. float32, bfloat16)")
    return dtype


def abstract_model(cfg: ModelConfig, mesh: Mesh | None) -> tuple[nnx.GraphDef, nnx.State, dict, dict]:
    """A model's graph and shape-only state, plus flat {path: ShapeDtypeStruct} and {path: target Sharding}, built
    without allocating any weights (a large model never holds a random init)."""
    graphdef, abstract_state = nnx.split(nnx.eval_shape(lambda: Qwen3(cfg, rngs=nnx.Rngs(0))))
    shapes = traverse_util.flatten_dict(nnx.to_pure_dict(abstract_state))
    if mesh is None:
        single = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        shardings = {path: single for path in shapes}
    else:
        shardings = traverse_util.flatten_dict(nnx.to_pure_dict(state_shardings(abstract_state, mesh)))
    return graphdef, abstract_state, shapes, shardings


def build_model(graphdef: nnx.GraphDef, abstract_state: nnx.State, values: dict) -> Qwen3:
    """A live model from loaded arrays, nested like `nnx.to_pure_dict` of the state."""
    nnx.replace_by_pure_dict(abstract_state, values)
    return nnx.merge(graphdef, abstract_state)


def progress_bar(total_bytes: int, desc: str, enabled: bool | None):
    """A byte-counting tqdm bar; `enabled=None` shows it only for loads of 1 GiB or more on a terminal."""
    disable = (not enabled) if enabled is not None else (None if total_bytes >= 2**30 else True)
    return tqdm(total=total_bytes, desc=desc, unit="B", unit_scale=True, disable=disable, leave=False)


def check_output_dir(path: str | Path, overwrite: bool) -> Path:
    """Fail early (before any expensive load) unless `path` is absent, an empty directory, or `overwrite` is set."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise CheckpointError(f"output path {path} exists and is not a directory")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise CheckpointError(f"output directory {path} is not empty; pass overwrite=True (--overwrite) to replace it")
    return path


def prepare_output_dir(path: str | Path, overwrite: bool, owned: tuple[str, ...]) -> Path:
    """Create `path` after `check_output_dir` (a user's files are never lost unasked).

    With `overwrite`, only entries matching the `owned` glob patterns (what this writer produces) are removed, so
    stale shards cannot mix with new ones while unrelated files (a tokenizer, notes) survive.
    """
    path = check_output_dir(path, overwrite)
    if path.is_dir():
        for pattern in owned:
            for old in path.glob(pattern):
                shutil.rmtree(old) if old.is_dir() else old.unlink()
    path.mkdir(parents=True, exist_ok=True)
    return path


def require_dir(path: str | Path, what: str) -> Path:
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{what} directory {path} does not exist")
    return path

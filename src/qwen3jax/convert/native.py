"""Native checkpoints: a directory holding `model_config.json` (`ModelConfig.to_dict()`) and `params/`, the model's
parameters saved by orbax as a pure nested dict. The config is written last, so a directory without it is an
interrupted save, never a checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import orbax.checkpoint as ocp
from flax import nnx, traverse_util
from jax.sharding import Mesh

from qwen3jax.convert.common import (
    CheckpointError,
    abstract_model,
    apply_overrides,
    build_model,
    prepare_output_dir,
    require_dir,
)
from qwen3jax.model import ModelConfig, Qwen3

CONFIG = "model_config.json"
PARAMS = "params"


def save_native(model: Qwen3, path: str | Path, *, overwrite: bool = False) -> Path:
    """Save `model` (config and parameters); refuses a non-empty `path` unless `overwrite`."""
    path = prepare_output_dir(path, overwrite, owned=(CONFIG, PARAMS)).absolute()  # orbax needs absolute paths
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(path / PARAMS, nnx.to_pure_dict(nnx.state(model, nnx.Param)))
        checkpointer.wait_until_finished()
    (path / CONFIG).write_text(json.dumps(model.config.to_dict(), indent=2) + "\n")
    return path


def read_native_config(path: str | Path) -> ModelConfig:
    """The `ModelConfig` stored in a native checkpoint directory."""
    file = require_dir(path, "native checkpoint") / CONFIG
    if not file.is_file():
        raise CheckpointError(f"{Path(path)} is not a native checkpoint: {CONFIG} is missing")
    try:
        return ModelConfig.from_dict(json.loads(file.read_text()))
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{file}: {e}") from None


def load_native(path: str | Path, *, mesh: Mesh | None = None, **overrides) -> tuple[ModelConfig, Qwen3]:
    """Load a native checkpoint as `(ModelConfig, Qwen3)`, each parameter restored directly onto its sharding
    (`parallel.state_shardings` on `mesh`; default: the first local device). `**overrides` as for `load_hf`."""
    cfg = apply_overrides(read_native_config(path), overrides)
    graphdef, abstract_state, shapes, shardings = abstract_model(cfg, mesh)
    target = traverse_util.unflatten_dict(
        {p: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=shardings[p]) for p, s in shapes.items()}
    )
    with ocp.StandardCheckpointer() as checkpointer:
        values = checkpointer.restore(Path(path).absolute() / PARAMS, target)
    return cfg, build_model(graphdef, abstract_state, values)

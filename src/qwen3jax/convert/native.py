"""Native checkpoints: a directory holding `model_config.json` (`ModelConfig.to_dict()`) and `params/`, the model's
parameters saved by orbax as a pure nested dict. The config is written last, so a directory without it is an
interrupted save, never a checkpoint.

Everything that reads a native checkpoint (generate, chat, `convert export`) also reads a training run: a run
directory (its newest checkpoint) or one of its `checkpoints/<step>` directories, whose `params/` item has the same
layout; the model config then comes from the run's `config.json`."""

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
    """The `ModelConfig` stored in a native checkpoint directory, or in the `config.json` of a training run."""
    file = require_dir(path, "native checkpoint") / CONFIG
    if not file.is_file():  # a training run: the model section of its config snapshot
        file = training_run_of(path) / "config.json"
    try:
        fields = json.loads(file.read_text())
        return ModelConfig.from_dict(fields if file.name == CONFIG else fields["model"])
    except (ValueError, TypeError, KeyError) as e:
        raise CheckpointError(f"{file}: {e}") from None


def native_params_dir(path: str | Path) -> Path:
    """Where the parameters are: `<path>/params` of a native checkpoint, else of the run's checkpoint that `path`
    names (a step directory, or a run directory: its newest step)."""
    path = Path(path).absolute()
    if (path / CONFIG).is_file():
        return path / PARAMS
    from qwen3jax.train.checkpoint import resolve_init_checkpoint

    training_run_of(path)
    return resolve_init_checkpoint(path) / PARAMS


def training_run_of(path: str | Path) -> Path:
    """The run directory of a run or step directory (it holds config.json and checkpoints/<step>/params)."""
    path = Path(path).absolute()
    for run in (path, path.parent.parent):
        if (run / "config.json").is_file() and any((run / "checkpoints").glob(f"*/{PARAMS}")):
            return run
    raise CheckpointError(
        f"{path} is not a native checkpoint: {CONFIG} is missing; nor is it a training run or one of its step "
        f"directories (config.json + checkpoints/<step>/{PARAMS}/)"
    )


def load_native(path: str | Path, *, mesh: Mesh | None = None, **overrides) -> tuple[ModelConfig, Qwen3]:
    """Load a native checkpoint (or a training run's, see the module docstring) as `(ModelConfig, Qwen3)`, each parameter restored directly onto its sharding
    (`parallel.state_shardings` on `mesh`; default: the first local device). `**overrides` as for `load_hf`."""
    cfg = apply_overrides(read_native_config(path), overrides)
    graphdef, abstract_state, shapes, shardings = abstract_model(cfg, mesh)
    target = traverse_util.unflatten_dict(
        {p: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=shardings[p]) for p, s in shapes.items()}
    )
    with ocp.StandardCheckpointer() as checkpointer:
        values = checkpointer.restore(native_params_dir(path), target)
    return cfg, build_model(graphdef, abstract_state, values)

"""Weights from anywhere a user keeps them, onto the run's mesh: the frozen models of a phase (reference policy,
teacher, reward model, judge) and `init_from` of the trained model.

A path is one of: a native checkpoint (`python -m qwen3jax.convert import`: `model_config.json` + `params/`), an HF
folder (`config.json` + safetensors), or a run's checkpoint (a run directory, its `checkpoints/` or one step
directory; the architecture comes from that run's `config.json`). Every parameter is placed on its sharding from
`parallel/rules.py`, as the trained model's are, and takes the trained model's runtime settings (compute dtype,
remat, MoE kernel), so a frozen forward pass runs like the student's.
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Mapping
from typing import Any

import jax
from flax import nnx, traverse_util
from jax.sharding import Mesh

from qwen3jax.convert.common import RUNTIME_FIELDS, abstract_model, apply_overrides, build_model
from qwen3jax.convert.hf import load_hf
from qwen3jax.convert.native import CONFIG as NATIVE_CONFIG
from qwen3jax.convert.native import load_native
from qwen3jax.model import ModelConfig
from qwen3jax.train.checkpoint import load_params, resolve_init_checkpoint
from qwen3jax.train.step import FrozenModel


def weights_kind(path: str | pathlib.Path) -> str:
    """"native", "hf" or "run" (a run directory, its checkpoints or one step) for a path of weights; a missing
    path is "run", whose loader says how to make it."""
    p = pathlib.Path(path).expanduser()
    if (p / NATIVE_CONFIG).is_file():
        return "native"
    if (p / "config.json").is_file() and any(p.glob("*.safetensors")):
        return "hf"
    return "run"


def load_model(path: str | pathlib.Path, *, mesh: Mesh, runtime: ModelConfig) -> tuple[ModelConfig, Any, dict]:
    """(config, graphdef, params) of the weights at `path`, on `mesh`, with `runtime`'s runtime fields."""
    overrides = {f: getattr(runtime, f) for f in RUNTIME_FIELDS}
    kind = weights_kind(path)
    if kind in ("native", "hf"):
        cfg, model = (load_native if kind == "native" else load_hf)(path, mesh=mesh, **overrides)
    else:
        step_dir = resolve_init_checkpoint(path)
        run_config = step_dir.parent.parent / "config.json"
        if not run_config.is_file():
            raise FileNotFoundError(f"{step_dir}: no config.json of its run next to checkpoints/, so its architecture "
                                    f"is unknown; convert it to a native checkpoint instead")  # fmt: skip
        cfg = apply_overrides(ModelConfig.from_dict(json.loads(run_config.read_text())["model"]), overrides)
        graphdef, abstract_state, shapes, shardings = abstract_model(cfg, mesh)
        target = traverse_util.unflatten_dict(
            {p: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=shardings[p]) for p, s in shapes.items()}
        )
        model = build_model(graphdef, abstract_state, load_params(step_dir, target))
    graphdef, params = nnx.split(model, nnx.Param)
    return cfg, graphdef, nnx.to_pure_dict(params)


def load_frozen_models(
    specs: Mapping[str, Mapping[str, Any]], *, mesh: Mesh, student: ModelConfig
) -> dict[str, FrozenModel]:
    """{name: FrozenModel} from the config's `frozen` block ({name: {"path": ...}}). A model whose vocabulary
    differs from the student's is refused: its per-token distributions (KL to a reference, a teacher's logits)
    would not be over the same ids."""
    models = {}
    for name, spec in specs.items():
        if not spec.get("path"):
            raise ValueError(f"frozen.{name}.path is empty: give a native checkpoint, an HF folder or a run directory")
        cfg, graphdef, params = load_model(spec["path"], mesh=mesh, runtime=student)
        if cfg.vocab_size != student.vocab_size:
            raise ValueError(
                f"frozen.{name} ({spec['path']}) has a vocabulary of {cfg.vocab_size} ids but the trained model has "
                f"{student.vocab_size}; a {name} must share the trained model's tokenizer and vocabulary"
            )
        models[name] = FrozenModel(params, graphdef)
    return models

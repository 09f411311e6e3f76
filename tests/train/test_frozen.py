"""Frozen models (and init_from) load from a run directory, a native checkpoint or an HF folder onto the run's mesh
with the trained model's shardings, holding exactly the stored parameters; another vocabulary is one clear error."""

import json

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import nnx

from qwen3jax.convert import save_hf, save_native
from qwen3jax.model import ModelConfig, create_model
from qwen3jax.parallel import make_mesh
from qwen3jax.train.frozen import load_frozen_models

from .helpers import TINY_MODEL

CFG = ModelConfig.from_preset("tiny").replace(**TINY_MODEL)


def _run_dir(path, model):
    """A run directory as the loop writes it: config.json with the model block, checkpoints/<step>/params."""
    (path / "checkpoints" / "3").mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"model": model.config.to_dict(), "steps": 3}))
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save((path / "checkpoints" / "3" / "params").absolute(), nnx.to_pure_dict(nnx.state(model, nnx.Param)))
    return path


@pytest.mark.parametrize("kind", ["run", "native", "hf"])
def test_frozen_model_holds_the_stored_parameters_sharded_like_the_student(tmp_path, kind):
    mesh = make_mesh({"data": 1, "fsdp": 2, "tensor": 2}, jax.devices()[:4])
    stored = create_model(CFG, seed=7)
    path = {"run": lambda p: _run_dir(p, stored), "native": lambda p: save_native(stored, p),
            "hf": lambda p: save_hf(stored, CFG, p)}[kind](tmp_path / kind)  # fmt: skip
    frozen = load_frozen_models({"reference": {"path": str(path)}}, mesh=mesh, student=CFG)["reference"]
    student = create_model(CFG, seed=0, mesh=mesh)
    expected = nnx.to_pure_dict(nnx.state(stored, nnx.Param))
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), frozen.params, expected)
    student_shardings = jax.tree.map(lambda x: x.sharding, nnx.to_pure_dict(nnx.state(student, nnx.Param)))
    jax.tree.map(lambda a, s: assert_same_sharding(a, s), frozen.params, student_shardings)


def assert_same_sharding(array, sharding):
    assert array.sharding.is_equivalent_to(sharding, array.ndim), (array.sharding, sharding)


def test_a_frozen_model_with_another_vocabulary_is_one_clear_error(tmp_path):
    other = create_model(CFG.replace(vocab_size=640), seed=0)
    path = save_native(other, tmp_path / "teacher")
    with pytest.raises(ValueError, match=r"^frozen.teacher .* has a vocabulary of 640 ids but the trained model has 512"):
        load_frozen_models({"teacher": {"path": str(path)}}, mesh=make_mesh({"data": 1}, jax.devices()[:1]), student=CFG)

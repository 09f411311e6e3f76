"""`load_hf` refuses what it cannot load faithfully, naming the tensor or field at fault; never a partial load."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from qwen3jax.convert import CheckpointError, load_hf

from .hf_models import random_hf_model


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """One dense (tied) and one MoE checkpoint; tests edit copies."""
    root = tmp_path_factory.mktemp("hf")
    random_hf_model("dense", tie_word_embeddings=True).save_pretrained(root / "dense")
    random_hf_model("moe", decoder_sparse_step=2, num_hidden_layers=3).save_pretrained(root / "moe")
    return root


@pytest.fixture
def dense(checkpoints, tmp_path):
    return shutil.copytree(checkpoints / "dense", tmp_path / "dense")


@pytest.fixture
def moe(checkpoints, tmp_path):
    return shutil.copytree(checkpoints / "moe", tmp_path / "moe")


def _raises(message: str):
    return pytest.raises(CheckpointError, match=re.escape(message))


def _edit_tensors(path, edit):
    file = path / "model.safetensors"
    tensors = load_file(file)
    edit(tensors)
    save_file(tensors, file, metadata={"format": "pt"})


def _edit_config(path, **changes):
    file = path / "config.json"
    file.write_text(json.dumps({**json.loads(file.read_text()), **changes}))


def test_missing_tensor(dense):
    _edit_tensors(dense, lambda t: t.pop("model.layers.1.self_attn.k_proj.weight"))
    with _raises("missing tensor model.layers.1.self_attn.k_proj.weight (expected shape [64, 64])"):
        load_hf(dense)


def test_missing_expert(moe):
    _edit_tensors(moe, lambda t: t.pop("model.layers.1.mlp.experts.5.up_proj.weight"))
    with _raises("missing tensor model.layers.1.mlp.experts.5.up_proj.weight (expected shape [32, 64])"):
        load_hf(moe)


def test_unexpected_tensor(dense):
    extra = {"model.layers.0.self_attn.rotary_emb.inv_freq": np.ones(16, np.float32)}
    _edit_tensors(dense, lambda t: t.update(extra))
    with _raises("unexpected tensor model.layers.0.self_attn.rotary_emb.inv_freq [16]"):
        load_hf(dense)


def test_wrong_shape(dense):
    _edit_tensors(dense, lambda t: t.update({"model.layers.0.self_attn.q_norm.weight": np.ones(16, np.float32)}))
    with _raises("tensor model.layers.0.self_attn.q_norm.weight has shape [16], expected [32]"):
        load_hf(dense)


def test_fused_layout_shape_is_checked(moe):
    def fuse_badly(t):
        t["model.layers.1.mlp.experts.gate_up_proj"] = np.zeros((8, 32, 64), np.float32)  # [E, F, D]: up half missing
        t["model.layers.1.mlp.experts.down_proj"] = np.zeros((8, 64, 32), np.float32)
        for key in [k for k in t if ".mlp.experts." in k and k.endswith(".weight")]:
            del t[key]

    _edit_tensors(moe, fuse_badly)
    with _raises("model.layers.1.mlp.experts.gate_up_proj has shape [8, 32, 64], expected [8, 64, 64]"):
        load_hf(moe)


def test_tied_head_copy_must_equal_embedding(dense):
    _edit_tensors(dense, lambda t: t.update({"lm_head.weight": t["model.embed_tokens.weight"].copy()}))
    load_hf(dense)  # an identical copy is harmless
    _edit_tensors(dense, lambda t: t.update({"lm_head.weight": t["lm_head.weight"] + 1}))
    with pytest.raises(CheckpointError, match="lm_head.weight differs from model.embed_tokens.weight"):
        load_hf(dense)


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(model_type="llama", architectures=["LlamaForCausalLM"]), "unsupported model_type 'llama'"),
        (dict(architectures=["Qwen3MoeForCausalLM"]), r"unsupported architectures \['Qwen3MoeForCausalLM'\]"),
        (dict(use_sliding_window=True, sliding_window=16), "use_sliding_window: true"),
        (dict(attention_bias=True), "attention_bias: true"),
        (dict(hidden_act="gelu"), "hidden_act: 'gelu'"),
        (dict(rope_parameters={"rope_type": "linear", "factor": 2.0}), "unsupported rope type 'linear'"),
        (dict(rope_scaling={"type": "dynamic", "factor": 2.0}), "unsupported rope type 'dynamic'"),
        (dict(num_key_value_heads=3), "num_heads=4 is not a multiple of num_kv_heads=3"),
    ],
)
def test_unsupported_config(dense, changes, message):
    _edit_config(dense, **changes)
    with pytest.raises(CheckpointError, match=message):
        load_hf(dense)


def test_missing_files(tmp_path, dense):
    with pytest.raises(FileNotFoundError, match="Hugging Face checkpoint directory .* does not exist"):
        load_hf(tmp_path / "nowhere")
    (dense / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="holds no \\*.safetensors files"):
        load_hf(dense)
    (dense / "config.json").unlink()
    with pytest.raises(CheckpointError, match="config.json does not exist"):
        load_hf(dense)


def test_overrides_cannot_change_architecture(dense):
    with pytest.raises(CheckpointError, match=r"cannot override \['num_layers'\]"):
        load_hf(dense, num_layers=1)
    with pytest.raises(CheckpointError, match="'int8' is not a floating-point dtype"):
        load_hf(dense, param_dtype="int8")


def test_broken_index(moe):
    (moe / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"model.norm.weight": "model-00002-of-00002.safetensors"}})
    )
    with pytest.raises(CheckpointError, match="lists files that do not exist: model-00002-of-00002.safetensors"):
        load_hf(moe)

"""Checkpoint conversion: Hugging Face Qwen3 / Qwen3-MoE folders ⇄ our model ⇄ native (orbax) checkpoints.

CLI: `python -m qwen3jax.convert import --hf DIR --out NATIVE_DIR` and
`python -m qwen3jax.convert export --ckpt NATIVE_DIR --out HF_DIR [--overwrite]`.
"""

from qwen3jax.convert.common import CheckpointError
from qwen3jax.convert.hf import load_hf, read_hf_config, save_hf
from qwen3jax.convert.hf_config import config_from_hf, config_to_hf
from qwen3jax.convert.native import load_native, read_native_config, save_native

__all__ = [
    "CheckpointError",
    "load_hf",
    "read_hf_config",
    "save_hf",
    "config_from_hf",
    "config_to_hf",
    "load_native",
    "read_native_config",
    "save_native",
]

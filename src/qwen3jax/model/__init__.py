"""Qwen3 dense and MoE models in Flax NNX."""

from qwen3jax.model.config import MODEL_CARD_PARAMS, PRESETS, ModelConfig, YarnScaling
from qwen3jax.model.attention import KVCache
from qwen3jax.model.factory import create_model
from qwen3jax.model.moe import RoutingStats, load_balance_loss
from qwen3jax.model.transformer import Qwen3, decode_view

__all__ = ["MODEL_CARD_PARAMS", "PRESETS", "ModelConfig", "YarnScaling", "KVCache", "Qwen3", "create_model", "RoutingStats", "load_balance_loss", "decode_view"]

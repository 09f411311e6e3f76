"""Pretraining stage 1 (General): the general mixture at the stage's sequence length (TR §3: >30T tokens, 4K).

Variants: `tiny` (CPU, embedded corpus) or any model preset, e.g. `--config=experiments/pretrain_s1.py:qwen3_0_6b`.
"""

from qwen3jax.data.stages import s1_config
from qwen3jax.train.config import choose_variant, pretrain_config

FULL_SIZE_DEFAULT = "qwen3_0_6b"


def get_config(arg: str = ""):
    variant, reason = choose_variant(arg, FULL_SIZE_DEFAULT)
    config = pretrain_config("pretrain_s1", variant, reason)
    config.data = s1_config()
    if variant.startswith("tiny"):
        # The whole held-out split (~24 batches): the first run's eval numbers cover every held-out record.
        config.eval.batches = 32
    return config


def sweep():
    """Peak learning rate sweep on the tiny model (run with `make sweep EXP=pretrain_s1`)."""
    return [{"optim.peak_lr": lr, "steps": 60} for lr in (1e-3, 3e-3, 1e-2)]

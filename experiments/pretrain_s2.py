"""Pretraining stage 2 (Reasoning): a STEM/code/reasoning-heavy mixture with an accelerated learning-rate decay,
initialised from stage 1's final weights (TR §3: ~5T tokens at 4K)."""

from qwen3jax.data.stages import s2_config
from qwen3jax.train.config import choose_variant, pretrain_config

FULL_SIZE_DEFAULT = "qwen3_0_6b"


def get_config(arg: str = ""):
    variant, reason = choose_variant(arg, FULL_SIZE_DEFAULT)
    tiny = variant.startswith("tiny")
    config = pretrain_config("pretrain_s2", variant, reason)
    config.data = s2_config()
    config.init_from = "runs/pretrain_s1"  # the default run directory of stage 1
    config.steps = 150 if tiny else 20_000
    # Accelerated decay: a short warmup (fresh Adam moments), then cosine to 1% of the peak (S1 ends at 10%). Full
    # size: a third of S1's peak, reached within the first half of the stage and held. Tiny: half of S1's peak,
    # decaying over the whole stage, so that each of its few steps still teaches. decay_steps follows
    # --config.steps (a reference, or 0: the rest of the run).
    config.optim.warmup_steps = 10 if tiny else 200
    config.optim.peak_lr = config.optim.peak_lr / (2 if tiny else 3)
    config.optim.decay_steps = 0 if tiny else config.get_ref("steps") // 2
    config.optim.end_lr_ratio = 0.01
    if tiny:
        config.eval.batches = 32  # the whole held-out split, every source (see pretrain_s1.py)
    return config

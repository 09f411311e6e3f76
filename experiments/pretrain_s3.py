"""Pretraining stage 3 (Long context): 32K sequences at full size (4x stage 1's length in the tiny variant), RoPE
base raised 1e4 -> 1e6 (ABF) and the 75/25 long/short document length mix, initialised from stage 2."""

from qwen3jax.data.stages import s3_config
from qwen3jax.train.config import choose_variant, pretrain_config

FULL_SIZE_DEFAULT = "qwen3_0_6b"


def get_config(arg: str = ""):
    variant, reason = choose_variant(arg, FULL_SIZE_DEFAULT)
    tiny = variant.startswith("tiny")
    config = pretrain_config("pretrain_s3", variant, reason)
    config.data = s3_config()
    config.init_from = "runs/pretrain_s2"
    config.model.rope_theta = 1_000_000.0  # ABF
    # The loss at positions the earlier stages never trained (beyond their sequence length): S3's own measure.
    config.eval.long_from = config.seq_len
    config.seq_len = config.seq_len * 4 if tiny else 32_768
    config.global_batch = 4 if tiny else 64
    config.micro_batches = 1 if tiny else 0  # 0: one 32K sequence per batch shard per micro-batch, whatever the mesh
    if not tiny:
        # Each 32K sequence split over 8 devices (model/context_parallel.py). Without it, one layer's attention
        # backward holds [heads, T, T] fp32 logits and their gradient for a whole sequence: 2 × 16 × 32K² × 4 B
        # ≈ 137 GB for Qwen3-0.6B (~half with the blocked causal attention), more than a chip's HBM; over 8
        # devices each holds [heads, T/8, T] of them, three quarters computed (load-balanced causal chunks):
        # ≈ 13 GB. The other devices are batch shards. (An estimate; a fused attention kernel shrinks it further.)
        config.mesh.context = 8
    config.steps = 120 if tiny else 5_000
    config.optim.warmup_steps = 10 if tiny else 100
    config.optim.peak_lr = config.optim.peak_lr / (5 if tiny else 10)
    if tiny:  # its few noisy steps (four sequences each) gain most from annealing: decay to 1%, as S2
        config.optim.end_lr_ratio = 0.01
    config.eval.every = 40 if tiny else 500
    config.eval.batches = 32 if tiny else config.eval.batches  # tiny: the whole held-out split (see pretrain_s1.py)
    return config

"""Off-policy distillation (TR §4.5, SPEC §4): SFT of a student on a teacher's responses in both modes.

The data comes from the curation command with the teacher model and both modes (same filters as the cold start):

    python -m qwen3jax.posttrain.curate --queries pool.jsonl --teacher <teacher run|checkpoint|HF folder> \\
        --modes think,no_think --n 4 --output data/distill.jsonl

Non-thinking responses carry the empty think block, so one set teaches both modes. The student starts from
`init_from` (by default `runs/pretrain_s1`). The tiny variant, without a teacher worth distilling, trains on the
embedded fusion set (`data/corpus/fusion.py`): the worked-solution teacher's curated responses in both modes, as
the curation command with `--modes think,no_think` gives them (the cold-start set alone would make it the cold-start
run again, thinking only).
"""

from qwen3jax.data.stages import chat_sft_config
from qwen3jax.train.config import choose_variant, pretrain_config

FULL_SIZE_DEFAULT = "qwen3_0_6b"
DISTILL_JSONL = "data/distill.jsonl"
DISTILL_EVAL_JSONL = "data/distill_eval.jsonl"


def get_config(arg: str = ""):
    variant, reason = choose_variant(arg, FULL_SIZE_DEFAULT)
    tiny = variant.startswith("tiny")
    config = pretrain_config("distill_off_policy", variant, reason)
    config.data = chat_sft_config("thinking_fusion" if tiny else "cold_start")
    if not tiny:
        config.data.sources.cold_start.update(kind="jsonl", path=DISTILL_JSONL, eval_path=DISTILL_EVAL_JSONL)
    config.init_from = "runs/pretrain_s1"
    config.loss.name, config.loss.z_loss = "sft", 0.0
    config.seq_len = 256 if tiny else 32_768
    config.steps = 150 if tiny else 5_000
    config.global_batch = 16 if tiny else 128
    config.optim.peak_lr = 1e-3 if tiny else 2e-5
    config.optim.warmup_steps = 10 if tiny else 100
    config.optim.end_lr_ratio = 0.1
    config.eval.update(
        name="composite",
        parts=["held_out_loss", "held_out_reward", "thinking_switch"],
        every=50 if tiny else 500,
        batches=4 if tiny else 20,
        prompts="embedded:math",
        num_prompts=32 if tiny else 500,
        thinking=True,
        max_new_tokens=160 if tiny else 16_384,
        rewards=[{"name": "exact_match"}] if tiny else [{"name": "math"}],
    )
    config.checkpoint.every = 50 if tiny else 500
    config.samples.name = "chat"
    config.samples.prompts = ["Evaluate 3 × (4 + 5) - 6.", "Find the greatest common divisor of 84 and 36."]
    config.samples.max_new_tokens = 160 if tiny else 2048
    return config

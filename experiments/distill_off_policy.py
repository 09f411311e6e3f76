"""Off-policy distillation (TR §4.5, SPEC §4): SFT of a student on a teacher's responses in both modes.

The data comes from the curation command with the teacher model and both modes (same filters as the cold start):

    python -m qwen3jax.posttrain.curate --queries pool.jsonl --teacher <teacher run|checkpoint|HF folder> \\
        --modes think,no_think --n 4 --output data/distill.jsonl

Non-thinking responses carry the empty think block, so one set teaches both modes. The student starts from
`init_from` (by default `runs/pretrain_s1`). The tiny variant, without a tiny model worth distilling, trains on the
embedded distillation set (`data/corpus/distill.py`): the same curation with the worked-solution teacher sampled in
both modes. Evaluation: the held-out masked loss, i.e. the student's cross-entropy on the teacher's held-out
responses (its distance to the teacher), the answers' accuracy and whether replies follow the switches.
"""

from qwen3jax.train.config import sft_config

FULL_SIZE_DEFAULT = "qwen3_0_6b"
DISTILL_JSONL = "data/distill.jsonl"
DISTILL_EVAL_JSONL = "data/distill_eval.jsonl"


def get_config(arg: str = ""):
    config = sft_config("distill_off_policy", arg, "distill", FULL_SIZE_DEFAULT, (DISTILL_JSONL, DISTILL_EVAL_JSONL))
    tiny = config.variant.startswith("tiny")
    config.seq_len = 256 if tiny else 32_768
    config.steps = 150 if tiny else 5_000
    config.optim.peak_lr = 1e-3 if tiny else 2e-5
    config.optim.warmup_steps = 10 if tiny else 100
    config.eval.update(parts=["held_out_loss", "held_out_reward", "thinking_switch"], every=50 if tiny else 500)
    config.checkpoint.every = 50 if tiny else 500
    return config

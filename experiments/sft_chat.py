"""Chat SFT: supervised fine-tuning of a pretrained model on conversations (assistant-only masked next-token loss),
the phase every later post-training stage builds on (SPEC §4). Starts from `init_from` — a run directory, a
checkpoint, a native checkpoint or an HF folder (`--config.init_from=...`); by default the final weights of
`runs/pretrain_s1`. The tiny variant trains on the embedded chat set (synthetic problems with worked solutions, in
thinking and non-thinking form); a real one points `data.sources` at chat JSONL/Parquet/ArrayRecord files.
"""

from qwen3jax.train.config import sft_config

FULL_SIZE_DEFAULT = "qwen3_0_6b"

SAMPLE_PROMPTS = [  # held-out style problems (not in the training split), answered in both thinking modes
    "Find the greatest common divisor of 84 and 36.",
    "Solve for x: 3x + 7 = 22.",
    "What is 2/3 + 5/6? Give the answer as a reduced fraction.",
]


def get_config(arg: str = ""):
    config = sft_config("sft_chat", arg, "reasoning_chat", FULL_SIZE_DEFAULT)
    tiny = config.variant.startswith("tiny")
    config.steps = 150 if tiny else 2_000
    config.eval.update(name="held_out_loss", every=25 if tiny else 200)
    config.checkpoint.every = 50 if tiny else 500
    config.samples.prompts = SAMPLE_PROMPTS
    config.samples.max_new_tokens = 96 if tiny else 1024
    return config

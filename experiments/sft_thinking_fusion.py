"""Thinking-mode fusion (TR §4.3, SPEC §4): SFT of the reasoning model on one set that teaches both modes and the
`/think` `/no_think` soft switches (thinking targets with their think block, non-thinking targets after the empty
think block, flags in user or system messages, multi-turn switches where the last flag wins).

The tiny variant fuses the embedded cold-start set (`data/corpus/fusion.py`) and starts from `runs/sft_cold_start`
(the reasoning-RL run at full size: `--config.init_from=runs/rl_reasoning`); a full-size run points
`data.sources` at the output of `python -m qwen3jax.posttrain.fusion` over rejection samples of the RL model.
Evaluation: the held-out masked loss and whether greedy replies follow the switches (`thinking_switch`).
"""

from qwen3jax.data.stages import chat_sft_config
from qwen3jax.train.config import choose_variant, pretrain_config

FULL_SIZE_DEFAULT = "qwen3_0_6b"
FUSION_JSONL = "data/thinking_fusion.jsonl"  # python -m qwen3jax.posttrain.fusion --output ... (full size)
FUSION_EVAL_JSONL = "data/thinking_fusion_eval.jsonl"


def get_config(arg: str = ""):
    variant, reason = choose_variant(arg, FULL_SIZE_DEFAULT)
    tiny = variant.startswith("tiny")
    config = pretrain_config("sft_thinking_fusion", variant, reason)
    config.data = chat_sft_config("thinking_fusion")
    if not tiny:
        config.data.sources.thinking_fusion.update(kind="jsonl", path=FUSION_JSONL, eval_path=FUSION_EVAL_JSONL)
    config.init_from = "runs/sft_cold_start" if tiny else "runs/rl_reasoning"
    config.loss.name, config.loss.z_loss = "sft", 0.0
    config.steps = 150 if tiny else 1_000
    config.global_batch = 16 if tiny else 128
    config.optim.peak_lr = 1e-3 if tiny else 1e-5
    config.optim.warmup_steps = 10 if tiny else 50
    config.optim.end_lr_ratio = 0.1
    config.eval.update(
        name="composite",
        parts=["held_out_loss", "thinking_switch"],
        every=50 if tiny else 200,
        batches=4 if tiny else 20,
        prompts="embedded:math",  # held-out problems, each asked with /think and with /no_think
        num_prompts=32 if tiny else 200,
        max_new_tokens=8,  # the switch shows in the opening of the reply
    )
    config.checkpoint.every = 50 if tiny else 250
    config.samples.name = "chat"
    config.samples.prompts = ["Evaluate 3 × (4 + 5) - 6. /no_think", "Evaluate 3 × (4 + 5) - 6. /think"]
    config.samples.max_new_tokens = 160 if tiny else 2048
    return config

"""Thinking-mode fusion (TR §4.3, SPEC §4): SFT of the reasoning model on one set that teaches both modes and the
`/think` `/no_think` soft switches (thinking targets with their think block, non-thinking targets after the empty
think block, flags in user or system messages, multi-turn switches where the last flag wins).

The tiny variant fuses the embedded cold-start set (`data/corpus/fusion.py`) and starts from `runs/sft_cold_start`
(the reasoning-RL run at full size: `--config.init_from=runs/rl_reasoning`); a full-size run points
`data.sources` at the output of `python -m qwen3jax.posttrain.fusion` over rejection samples of the RL model.
Evaluation: the held-out masked loss and whether greedy replies follow the switches (`thinking_switch`).
"""

from qwen3jax.train.config import sft_config

FULL_SIZE_DEFAULT = "qwen3_0_6b"
FUSION_JSONL = "data/thinking_fusion.jsonl"  # python -m qwen3jax.posttrain.fusion --output ... (full size)
FUSION_EVAL_JSONL = "data/thinking_fusion_eval.jsonl"


def get_config(arg: str = ""):
    config = sft_config("sft_thinking_fusion", arg, "thinking_fusion", FULL_SIZE_DEFAULT,
                        (FUSION_JSONL, FUSION_EVAL_JSONL))
    tiny = config.variant.startswith("tiny")
    config.init_from = "runs/sft_cold_start" if tiny else "runs/rl_reasoning"
    config.eval.update(
        parts=["held_out_loss", "thinking_switch"],  # held-out problems, each asked with /think and with /no_think
        num_prompts=32 if tiny else 200,
        max_new_tokens=8,  # the switch shows in the opening of the reply
    )
    config.samples.prompts = ["Evaluate 3 × (4 + 5) - 6. /no_think", "Evaluate 3 × (4 + 5) - 6. /think"]
    return config

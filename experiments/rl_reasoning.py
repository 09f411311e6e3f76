"""Reasoning RL (TR §4.2, SPEC §6): GRPO on query–verifier pairs, from the long-CoT cold-start model.

The batch source samples `group_size` completions per prompt from the current weights (same process, same mesh),
the `math` verifier scores them, group-relative advantages weight the clipped policy-gradient loss (`grpo`); μ
updates per rollout batch reuse the sampler's log-probs. The tiny variant answers the embedded held-out arithmetic
problems in non-thinking mode (short completions a tiny model can learn to get right); full-size variants think.
"""

import ml_collections

from qwen3jax.data.stages import chat_sft_config
from qwen3jax.train.config import choose_variant, pretrain_config

FULL_SIZE_DEFAULT = "qwen3_0_6b"


def get_config(arg: str = ""):
    variant, reason = choose_variant(arg, FULL_SIZE_DEFAULT)
    tiny = variant.startswith("tiny")
    config = pretrain_config("rl_reasoning", variant, reason)
    config.init_from = "runs/sft_chat"  # a model that already answers in the chat format
    config.data = chat_sft_config()  # the tokenizer of the model's data (rollout prompts come from the source)
    group_size = 8
    config.global_batch = 64 if tiny else 512  # prompts per step = global_batch / group_size
    config.seq_len = 192 if tiny else 8192
    config.micro_batches = 1 if tiny else 0
    config.steps = 40 if tiny else 200
    config.batch_source = ml_collections.ConfigDict(
        {
            "name": "rollouts",
            "prompts": "embedded:math",  # or a query–verifier JSONL (qwen3jax.data.verifiable)
            "group_size": group_size,
            "max_new_tokens": 48 if tiny else 4096,
            "temperature": 1.0,
            "top_p": 1.0,
            "top_k": 0,
            "thinking": not tiny,
            "advantage_scale": "std",  # "none": Dr. GRPO
            "updates_per_rollout": 1,  # μ
            "dynamic_sampling": False,
            "max_refills": 2,
            "overlong": "none",  # none | filter | soft
            "overlong_cache": 16 if tiny else 512,
        }
    )
    config.rewards = [{"name": "math", "weight": 1.0}]
    config.loss = ml_collections.ConfigDict(
        {"name": "grpo", "eps_low": 0.2, "eps_high": 0.28, "aggregation": "token_mean", "max_tokens": 48 if tiny else 4096,
         "beta": 0.0, "entropy_coef": 0.0, "vocab_slices": 1 if tiny else 8}  # fmt: skip
    )
    config.frozen = ml_collections.ConfigDict()  # beta > 0: {"reference": {"path": <the init_from checkpoint>}}
    config.optim.peak_lr = 2e-5 if tiny else 1e-6
    config.optim.warmup_steps = 0
    config.optim.schedule = "cosine"
    config.optim.end_lr_ratio = 1.0  # constant rate
    config.optim.weight_decay = 0.0
    config.eval.update(
        name="held_out_reward",
        every=10 if tiny else 20,
        prompts="embedded:math",  # its eval split
        num_prompts=16 if tiny else 128,
        thinking=not tiny,
        max_new_tokens=48 if tiny else 4096,
        rewards=[],  # empty: the run's rewards
    )
    config.log_every = 1
    config.checkpoint.every = 10 if tiny else 20
    config.samples.name = "chat"
    config.samples.num = 2
    config.samples.max_new_tokens = 48 if tiny else 1024
    config.samples.prompts = ["What is 7 + 5?", "Solve for x: 2x + 3 = 11."]
    return config

"""General RL (TR §4.4, SPEC §4 stage 4): GRPO over a mixture of tasks with rule, judge and reward-model rewards,
from the thinking-mode fusion model, on the same train step and loop as every other phase.

Each step's prompts are drawn from the tasks of `batch_source.tasks` by their shares (`rl/mixture.py`); every task has
its prompt source, its rewards and its thinking mode (a `/think` or `/no_think` switch on the prompt, which the model
itself must follow: the `format` reward checks it). Tasks:
- instruction: IFEval-style constraints checked by rules (`ifeval`);
- format: hybrid-thinking format on single-turn prompts with a random switch (`format`);
- thinkfollow: multi-turn conversations switching `/think` and `/no_think` (ThinkFollow), scored by `format`;
- qa: answers judged against a reference by a frozen judge model (`judge`);
- preference: replies scored by the trained reward model (`reward_model`, `experiments/reward_model.py`);
- tool_use: math with a calculator and sandboxed python, multi-turn up to `max_turns` (needs the tool rollouts).
Held-out evaluation: every task's held-out prompts, greedy, scored by the task's rewards (`held_out_mixture`).
"""

import ml_collections

from qwen3jax.data.stages import chat_sft_config
from qwen3jax.train.config import choose_variant, pretrain_config

FULL_SIZE_DEFAULT = "qwen3_0_6b"


def tasks() -> dict:
    """The task mixture: prompt source, rewards (weights), mode and share of each task."""
    return {
        "instruction": {"prompts": "embedded:instruction", "rewards": [{"name": "ifeval", "weight": 1.0}],
                        "mode": "mixed", "share": 0.25},
        "format": {"prompts": "embedded:instruction", "rewards": [{"name": "format", "weight": 1.0}],
                   "mode": "mixed", "share": 0.1},
        "thinkfollow": {"prompts": "embedded:thinkfollow", "rewards": [{"name": "format", "weight": 1.0}],
                        "mode": "given", "share": 0.15},
        "qa": {"prompts": "embedded:qa", "rewards": [{"name": "judge", "frozen": "judge", "weight": 1.0}],
               "mode": "mixed", "share": 0.2},
        "preference": {"prompts": "embedded:code",
                       "rewards": [{"name": "reward_model", "frozen": "reward_model", "squash": True, "weight": 1.0}],
                       "mode": "mixed", "share": 0.15},
        "tool_use": {"prompts": "embedded:math", "rewards": [{"name": "math", "weight": 1.0}], "mode": "mixed",
                     "share": 0.15, "tools": ["calculator", "python"], "max_turns": 4},
    }  # fmt: skip


def get_config(arg: str = ""):
    variant, reason = choose_variant(arg, FULL_SIZE_DEFAULT)
    tiny = variant.startswith("tiny")
    config = pretrain_config("rl_general", variant, reason)
    config.init_from = "runs/sft_thinking_fusion"
    config.data = chat_sft_config()  # the tokenizer of the model's data (rollout prompts come from the tasks)
    group_size = 8
    config.global_batch = 64 if tiny else 512  # prompts per step = global_batch / group_size
    config.seq_len = 256 if tiny else 8192
    config.micro_batches = 1 if tiny else 0
    config.steps = 40 if tiny else 200
    config.batch_source = ml_collections.ConfigDict(
        {
            "name": "task_mixture",
            "tasks": tasks(),
            "group_size": group_size,
            "max_new_tokens": 64 if tiny else 4096,
            "temperature": 1.0,
            "top_p": 1.0,
            "top_k": 0,
            "advantage_scale": "std",
            "updates_per_rollout": 1,
            "dynamic_sampling": True,  # many groups of rule rewards are all-pass or all-fail
            "max_refills": 2,
            "overlong": "soft",
            "overlong_cache": 16 if tiny else 512,
        }
    )
    config.rewards = []  # each task names its own rewards
    config.frozen = ml_collections.ConfigDict(
        {"judge": {"path": "runs/sft_thinking_fusion"}, "reward_model": {"path": "runs/reward_model"}}
    )  # beta > 0 adds {"reference": {"path": <the init_from checkpoint>}}
    config.loss = ml_collections.ConfigDict(
        {"name": "grpo", "eps_low": 0.2, "eps_high": 0.28, "aggregation": "token_mean", "max_tokens": 64 if tiny else 4096,
         "beta": 0.0, "entropy_coef": 0.0, "vocab_slices": 1 if tiny else 8}  # fmt: skip
    )
    config.optim.peak_lr = 2e-5 if tiny else 1e-6
    config.optim.warmup_steps = 0
    config.optim.schedule = "cosine"
    config.optim.end_lr_ratio = 1.0  # constant rate
    config.optim.weight_decay = 0.0
    config.eval.update(name="held_out_mixture", every=10 if tiny else 20, num_prompts=8 if tiny else 64,
                       max_new_tokens=64 if tiny else 4096)  # fmt: skip
    config.log_every = 1
    config.checkpoint.every = 10 if tiny else 20
    config.samples.name = "chat"
    config.samples.num = 2
    config.samples.max_new_tokens = 64 if tiny else 1024
    config.samples.prompts = ["Describe bees in two sentences. /no_think", "What is 12 * 13? /think"]
    return config

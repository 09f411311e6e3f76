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
- tool_use: math with a calculator and sandboxed python, multi-turn up to `max_turns` turns.
Held-out evaluation: every task's held-out prompts, greedy, scored by the task's rewards (`held_out_mixture`).
"""

import ml_collections

from experiments import rl_reasoning


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
    """Reasoning RL's settings (GRPO, clip-higher, token-mean) with the task mixture as the batch source."""
    config = rl_reasoning.get_config(arg)
    tiny = config.variant.startswith("tiny")
    config.name = "rl_general"
    config.init_from = "runs/sft_thinking_fusion"
    config.seq_len = 768 if tiny else 16384  # tool_use: ~330 prompt tokens with the two tools' schemas, up to 4 turns
    source = config.batch_source
    del source["prompts"], source["thinking"]  # each task has its prompts and mode
    source.update(name="task_mixture", tasks=tasks(), max_new_tokens=64 if tiny else 4096, overlong="filter",
                  dynamic_sampling=True)  # many groups of rule rewards are all-pass or all-fail  # fmt: skip
    config.rewards = []  # each task names its own rewards
    config.frozen = ml_collections.ConfigDict(
        {"judge": {"path": "runs/sft_thinking_fusion"}, "reward_model": {"path": "runs/reward_model"}}
    )  # beta > 0 adds {"reference": {"path": <the init_from checkpoint>}}
    config.loss.max_tokens = 64 if tiny else 4096
    config.eval = ml_collections.ConfigDict({"name": "held_out_mixture", "every": 10 if tiny else 20,
                                            "num_prompts": 8 if tiny else 64, "max_new_tokens": 64 if tiny else 4096})  # fmt: skip
    config.samples.max_new_tokens = 64 if tiny else 1024
    config.samples.prompts = ["Describe bees in two sentences. /no_think", "What is 12 * 13? /think"]
    return config

"""General RL end to end (`experiments/rl_general.py`'s tiny variant through the run loop, its mixture reduced to two
rule-rewarded tasks): from one SFT start, GRPO over the mixture raises the `format` reward and the `ifeval` reward of
greedy replies to held-out prompts (`held_out_mixture`).

The tasks: "format" (`/no_think` prompts, reward `format`: an empty think block, then an answer) and "instruction"
(`/no_think` prompts asking for lowercase, reward `ifeval`). The start is SFT'd on replies whose think block is
empty 30% of the time and whose answer is lowercase 30% of the time, drawn independently of the prompt: it knows the
shape of a reply but follows neither the switch nor the constraint (greedy: neither), so both rewards can rise only
through GRPO. (Its prompts carry no switch: the SFT data check refuses reasoning under `/no_think`.) As in the reasoning check, the best reply does not depend on the prompt (a tiny model's budget).
"""

import random

import numpy as np
import pytest

from experiments import rl_general
from qwen3jax.rewards.ifeval import instruction_text
from tests.rl.test_rl_reasoning import _rows, _trainer
from tests.zero_products import _write_jsonl, train_chat_sft
from tests.train.helpers import TINY_MODEL

LOWERCASE = {"id": "lowercase"}
THINGS = ("the sea", "a cat", "the sky", "a tree", "the moon", "a river", "the wind", "a bird")


def _prompts(numbers):
    return [f"Describe {thing} number {n}." for n in numbers for thing in THINGS]


@pytest.fixture(scope="module")
def start(tmp_path_factory):
    """The SFT start and the task prompt files (train: 96 prompts per task, held out: 16 others)."""
    root = tmp_path_factory.mktemp("general")
    train, held_out = _prompts(range(12)), _prompts(range(12, 14))
    ask = instruction_text(LOWERCASE)
    draw = random.Random(1)
    sft = []
    for prompt in train:
        for text in (prompt, f"{prompt} {ask}"):
            think = "" if draw.random() < 0.3 else "hmm"
            answer = "it is calm here" if draw.random() < 0.3 else "It is calm here"
            sft.append({"messages": [{"role": "user", "content": text},
                                     {"role": "assistant", "content": f"<think>\n{think}\n</think>\n\n{answer}"}]})  # fmt: skip
    for name, prompts in (("train", train), ("eval", held_out)):
        _write_jsonl(root / f"format_{name}.jsonl", [{"prompt": p, "rewards": [{"name": "format"}]} for p in prompts])
        _write_jsonl(root / f"instruction_{name}.jsonl", [
            {"prompt": f"{p} {ask}", "constraints": [LOWERCASE], "rewards": [{"name": "ifeval"}]} for p in prompts
        ])  # fmt: skip
    train_chat_sft(_write_jsonl(root / "sft.jsonl", sft), root / "sft", source="replies", seq_len=128)
    return root


def _config(root, *, seed: int, steps: int):
    config = rl_general.get_config("tiny")
    config.model.update(TINY_MODEL)
    config.data.vocab_size = 512
    config.init_from, config.seed, config.steps = str(root / "sft"), seed, steps
    config.seq_len, config.global_batch = 128, 64  # 8 prompts x 8 samples
    config.frozen = {}
    config.batch_source.tasks = {
        name: {"prompts": str(root / f"{name}_train.jsonl"), "eval_prompts": str(root / f"{name}_eval.jsonl"),
               "rewards": [{"name": reward}], "mode": "no_think", "share": 0.5}
        for name, reward in (("format", "format"), ("instruction", "ifeval"))
    }  # fmt: skip
    config.batch_source.update(max_new_tokens=16, dynamic_sampling=False, overlong="none")
    config.loss.max_tokens = 16
    config.optim.peak_lr = 1e-3
    config.eval.update(every=steps, num_prompts=16, max_new_tokens=16)
    config.samples.num, config.checkpoint.async_save = 0, False
    return config


@pytest.mark.slow
def test_general_rl_raises_the_format_and_instruction_rewards_on_held_out_prompts(tmp_path, start):
    _trainer(_config(start, seed=0, steps=30), tmp_path).run()
    rows = _rows(tmp_path)
    train = [r for r in rows if "train/reward_mean" in r]
    evals = {r["step"]: r for r in rows if "eval/reward_mean" in r}
    before, after = evals[0], evals[30]
    fmt, follow = "eval/format/reward/format", "eval/instruction/reward/ifeval"
    assert before[fmt] <= 0.2 and after[fmt] >= 0.8, (before[fmt], after[fmt])
    assert before[follow] <= 0.2 and after[follow] >= 0.8, (before[follow], after[follow])
    # Measured (seed 0, peak_lr 1e-3): held-out greedy format 0 -> 1 and ifeval 0 -> 1; training reward_mean of
    # steps 1-5 0.16-0.3, of steps 26-30 ~0.7-0.9; entropy 1.9 -> 0.6 nats per sampled token. At 2e-3 the policy
    # collapsed into one repeated token on another prompt order. The format task starts from ~3% well-formed
    # samples, so its signal depends on the draw: seed 1 found no well-formed sample in 40 steps (ifeval 0 -> 1).
    reward = np.array([r["train/reward_mean"] for r in train])
    assert reward[-5:].mean() > reward[:5].mean() + 0.3, reward
    assert {"train/task/format/reward_mean", "train/task/instruction/reward_mean", "train/reward/format",
            "train/reward/ifeval"} <= set(train[-1])  # fmt: skip

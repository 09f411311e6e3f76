"""An RL step with tools through the run loop (`batch_source.tools`, `max_turns`): a tiny random model whose
sampling is limited to the tokenizer's special tokens, with `<|im_end|>` as the only stop (so its turns often open
`<tool_call>` blocks and end with `<|im_end|>`), runs multi-turn rollouts, the train step trains on them, and the
tool metrics it logs equal a count over the rollout's conversations."""

import json
import types

import jax
import numpy as np
import pytest

from experiments import rl_reasoning
from qwen3jax.data.tokenizer import default_tokenizer
from qwen3jax.rl import source as rollout_source
from qwen3jax.rl.source import RolloutSource
from qwen3jax.sample import generate
from qwen3jax.train.loop import Trainer
from tests.train.helpers import TINY_MODEL


def test_an_rl_step_with_tools_logs_its_tool_use(tmp_path, monkeypatch):
    config = rl_reasoning.get_config("tiny")
    config.model.update(TINY_MODEL, vocab_size=8192)  # the prompt with the calculator's schema: 210 tokens
    config.data.vocab_size, config.init_from, config.steps = 8192, "", 1
    config.seq_len, config.global_batch = 384, 8
    config.batch_source.update(group_size=4, max_new_tokens=24, tools=["calculator"], max_turns=3)
    config.loss.max_tokens = 24
    # A stub judge whose score varies with the judged text, so groups have a signal and the step trains.
    config.rewards = [{"name": "judge", "generate": lambda texts: [f"Score: {len(t) % 11}" for t in texts],
                       "reference_field": "gold"}]  # fmt: skip
    config.eval.every, config.samples.num, config.checkpoint.async_save = 0, 0, False

    episodes, rows = [], []
    real_rollout, real_rows = rollout_source.multiturn_rollout, rollout_source.rollout_rows
    monkeypatch.setattr(rollout_source, "multiturn_rollout",
                        lambda *a, **k: episodes.extend(real_rollout(*a, **k)) or episodes)  # fmt: skip
    monkeypatch.setattr(rollout_source, "rollout_rows", lambda *a, **k: rows.append(real_rows(*a, **k)) or rows[-1])
    special_only = {"vocab_limit": 10, "stop_ids": (3,)}  # ids 0-9 of the tiny tokenizer; 3 is <|im_end|>
    monkeypatch.setattr(rollout_source, "generate", lambda *a, **k: generate(*a, **{**k, **special_only}))
    Trainer(config, tmp_path, jax.devices()[:1]).run()

    (logged,) = [json.loads(line) for line in open(tmp_path / "metrics.jsonl") if "train/loss" in line]
    tool_messages = [m["content"] for e in episodes for m in e.messages if m["role"] == "tool"]
    errors = [t for t in tool_messages if t.startswith("Error: ")]
    assert len(episodes) == 8 and len(tool_messages) >= 3  # the loop ran: calls were made, answered, continued
    assert logged["train/tool/calls"] == len(tool_messages)
    assert logged["train/tool/errors"] == len(errors) > 0
    assert logged["train/turns_mean"] == pytest.approx(np.mean([e.turns for e in episodes]))
    assert sum(v for k, v in logged.items() if k.startswith("train/tool/errors/")) == len(errors)
    # The train step's rows are the episodes: their tokens, the sampler's log-probs, the loss on the model's tokens.
    (batch,) = rows
    for i, e in enumerate(episodes):
        n = len(e.tokens)
        np.testing.assert_array_equal(batch["tokens"][i, :n], e.tokens)
        np.testing.assert_allclose(batch["old_logprobs"][i, :n], e.logprobs)
        trained = batch["advantages"][i] != 0
        np.testing.assert_array_equal(batch["loss_mask"][i, :n], np.array(e.sampled) & trained)
    assert logged["train/completion_tokens"] > 0 and np.isfinite(logged["train/loss"])
    report = json.loads((tmp_path / "data_report.json").read_text())
    assert sum(report["tool_errors"].values()) == len(errors)


def test_tool_settings_are_checked():
    trainer = types.SimpleNamespace(config=types.SimpleNamespace(global_batch=8, seed=0, seq_len=256, rewards=[]),
                                    layout=None, tokenizer=default_tokenizer(512), lend_frozen=None)  # fmt: skip
    for options, message in [
        (dict(tools=["calculator"]), "needs max_turns >= 2"),
        (dict(max_turns=3), "needs tools"),
        (dict(tools=["calculator"], max_turns=2, overlong="soft"), "with tools use 'filter'"),
    ]:
        with pytest.raises(ValueError, match=message):
            RolloutSource(trainer, prompts="embedded:math", group_size=4, **options)
    with pytest.raises(KeyError, match="unknown tool 'calc'"):
        RolloutSource(trainer, prompts="embedded:math", group_size=4, tools=["calc"], max_turns=2)

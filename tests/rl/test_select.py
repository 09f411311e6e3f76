"""Query selection (`python -m qwen3jax.rl.select`): pass rates and outcomes equal an independent count, and through
a real rollout source (sampling replaced by replies whose number of right answers per query is known) the kept
queries are exactly those with some but not all samples right, written with their pass rate."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from experiments import rl_reasoning
from qwen3jax.rl import select
from qwen3jax.sample.result import GenerationResult
from qwen3jax.train.loop import Trainer
from tests.train.helpers import TINY_MODEL
from tests.train.test_run import REPO


def test_pass_rates_and_outcomes_equal_a_direct_count():
    rewards = np.array([[1, 0, 1, 0], [1, 1, 1, 1], [0, 0, 0.5, 0], [1, 0, 0, 1], [1, 1, 0, 0]], np.float32)
    judged = np.array([[1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 1, 1], [0, 0, 0, 0], [0, 1, 1, 1]], bool)
    rate, outcomes = select.learnable(rewards, judged)
    for g in range(len(rewards)):
        passes = [r >= 1 for r, j in zip(rewards[g], judged[g]) if j]  # a partial reward (0.5) is not a pass
        if not passes:
            assert np.isnan(rate[g]) and outcomes["unjudged"][g]
            continue
        assert rate[g] == pytest.approx(sum(passes) / len(passes))
        expected = "all_failed" if not any(passes) else "all_passed" if all(passes) else "kept"
        assert [name for name, mask in outcomes.items() if mask[g]] == [expected]


def test_select_keeps_the_queries_with_some_right_samples(tmp_path, monkeypatch):
    queries = [f"What is {n} times 0?" for n in range(10, 22)]
    right = [0, 3, 8, 1, 8, 0, 5, 7, 8, 2, 0, 4]  # right samples of 8, per query
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": q, "gold": "0", "rewards": [{"name": "exact_match"}]}) + "\n"
                               for q in queries))  # fmt: skip
    config = rl_reasoning.get_config("tiny")
    config.model.update(TINY_MODEL)
    config.data.vocab_size, config.init_from = 512, ""
    config.batch_source.prompts = str(prompts)
    config.rewards = [{"name": "exact_match", "weight": 1.0}]
    trainer = Trainer(config, tmp_path / "scratch", jax.devices()[:1])
    tok = trainer.tokenizer
    by_prompt = {tuple(trainer.batch_source().prompt_ids({"prompt": q})): k for q, k in zip(queries, right)}

    def fake_generate(model, prompt_ids, *, n, stop_ids, **_):
        replies = [[tok.encode("0" if j < by_prompt[tuple(p)] else "5") + [stop_ids[0]] for j in range(n)]
                   for p in prompt_ids]  # fmt: skip
        tokens = [r for group in replies for r in group]
        zeros = [np.zeros(len(t), np.float32) for t in tokens]
        return GenerationResult(tokens, zeros, zeros, zeros, ["stop"] * len(tokens), [len(t) for t in tokens])

    monkeypatch.setattr("qwen3jax.rl.source.generate", fake_generate)
    source = trainer.batch_source()  # 8 prompts per step: two batches, the second one short
    kept, counts = select.select(source, None, source.records)
    assert counts == {"queries": 12, "kept": 6, "all_failed": 3, "all_passed": 3, "unjudged": 0}
    assert [(r["prompt"], r["pass_rate"]) for r in kept] == [(q, k / 8) for q, k in zip(queries, right) if 0 < k < 8]


def test_the_command_refuses_a_run_without_a_starting_model(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "qwen3jax.rl.select", "--config=experiments/rl_reasoning.py:tiny",
         "--config.init_from=", f"--output={tmp_path / 'kept.jsonl'}"],
        cwd=REPO, capture_output=True, text=True, env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )  # fmt: skip
    assert result.returncode == 1 and "select needs an RL experiment" in result.stderr

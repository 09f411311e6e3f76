"""Thinking budget: the stop-thinking text is forced at exactly the budget, per row, inside the compiled loop."""

from __future__ import annotations

import numpy as np
import pytest

from qwen3jax.data.tokenizer import load_tokenizer
from qwen3jax.sample import STOP_THINKING_TEXT, ThinkingTokens, generate
from qwen3jax.sample.budget import OUTSIDE, THINKING

from ..chat.conftest import qwen3_tokenizer_dir  # noqa: F401  (fixture: the real Qwen3 tokenizer files)
from .helpers import DENSE, build, greedy_by_full_forward, log_softmax, step_logits

START = 126  # stands for <think>; </think> is picked below among the tokens the model really emits
STEPS = 16


def test_budget_forces_the_stop_text_at_each_rows_budget():
    model = build(DENSE, seed=3)
    prompts = {
        "a": [3, 17, 25, START],  # thinking, budget 2
        "b": [100, 7, START],  # thinking, budget 5
        "c": [12, 90, START],  # thinking, closes </think> itself at step 1, before its budget of 4
        "d": [9, 8],  # not thinking: a budget of 0 never triggers
        "e": [44, 2, 61, START],  # thinking, budget 0: forced from the first step
    }
    budgets = {"a": 2, "b": 5, "c": 4, "d": 0, "e": 0}
    names = list(prompts)
    free = dict(zip(names, generate(model, list(prompts.values()), max_new_tokens=STEPS).tokens))
    end = free["c"][1]
    thinking = ThinkingTokens(start_id=START, end_id=end, stop_text_ids=(60, 61, end, 62, 63))
    # The choice of `end` must leave the other rows' free thinking unclosed before their budgets.
    assert end != START and free["c"][0] != end
    assert end not in free["a"][:2] + free["b"][:5] and START not in free["d"]

    result = generate(
        model, list(prompts.values()), max_new_tokens=STEPS, thinking=thinking,
        thinking_budget=[budgets[k] for k in names],
    )
    out = dict(zip(names, result.tokens))
    forced = dict(zip(names, result.forced))
    text = list(thinking.stop_text_ids)
    for name, at in [("a", 2), ("b", 5), ("e", 0)]:
        assert out[name][:at] == free[name][:at]
        assert out[name][at : at + len(text)] == text
        assert np.flatnonzero(forced[name]).tolist() == list(range(at, at + len(text)))
        assert np.all(result.logprobs[names.index(name)][forced[name]] == 0)
    for name in ("c", "d"):
        assert out[name] == free[name] and not forced[name].any()

    # After the forced text each row answers greedily from a cache that holds that text.
    heads = {name: prompts[name] + out[name][: at + len(text)] for name, at in [("a", 2), ("b", 5), ("e", 0)]}
    tails = greedy_by_full_forward(model, list(heads.values()), STEPS - len(text))
    for (name, head), tail in zip(heads.items(), tails):
        rest = out[name][len(head) - len(prompts[name]) :]
        assert rest == tail[: len(rest)] and len(rest) > 0
    # Forced tokens still report the raw model's log-prob of them.
    raw = log_softmax(step_logits(model, prompts["a"], out["a"], width=32))
    np.testing.assert_allclose(result.raw_logprobs[0], raw[np.arange(STEPS), out["a"]], atol=1e-4)


def test_prompt_phase():
    t = ThinkingTokens(start_id=1, end_id=2, stop_text_ids=(2,))
    assert t.prompt_phase([5, 1]) == THINKING
    assert t.prompt_phase([1, 5, 2, 6]) == OUTSIDE  # e.g. the non-thinking generation prompt's empty block
    assert t.prompt_phase([1, 2, 7, 1, 5]) == THINKING
    assert t.prompt_phase([5, 6]) == OUTSIDE


def test_thinking_tokens_from_the_qwen3_tokenizer(qwen3_tokenizer_dir):  # noqa: F811
    tokenizer = load_tokenizer(qwen3_tokenizer_dir)
    t = ThinkingTokens.from_tokenizer(tokenizer)
    assert (t.start_id, t.end_id) == (151667, 151668)  # SPEC §5
    assert t.stop_text_ids.count(151668) == 1
    assert tokenizer.decode(t.stop_text_ids) == STOP_THINKING_TEXT


def test_thinking_tokens_reject_bad_input():
    class NoThinkTags:
        def encode(self, text):
            return list(text.encode())

        def token_to_id(self, token):
            return None

    with pytest.raises(ValueError, match="no single special token '<think>'"):
        ThinkingTokens.from_tokenizer(NoThinkTags())
    with pytest.raises(ValueError, match="do not contain the </think> id"):
        ThinkingTokens(start_id=1, end_id=2, stop_text_ids=(3, 4))
    model = build(DENSE)
    with pytest.raises(ValueError, match="thinking_budget needs"):
        generate(model, [[1]], max_new_tokens=2, thinking_budget=3)
    with pytest.raises(ValueError, match="2 entries for 1 prompts"):
        generate(model, [[1]], max_new_tokens=2, thinking_budget=[3, 4], thinking=ThinkingTokens(1, 2, (2,)))
    for bad in (True, 2.5, "3"):
        with pytest.raises(ValueError, match="thinking_budget must be None, an int"):
            generate(model, [[1]], max_new_tokens=2, thinking_budget=bad, thinking=ThinkingTokens(1, 2, (2,)))

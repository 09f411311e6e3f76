"""The `distill` batch source's GKD mix: batch i is on-policy with probability lmbda (a seeded draw, the same
after a resume); with lmbda = 0 it yields the fixed dataset's rows exactly and resumes on the same batch; the
student's samples keep to the thinking budget (SPEC §4's stop-thinking text forced in, not trained); bad settings
are named."""

import numpy as np
import pytest

from experiments import distill_on_policy
from qwen3jax.data.pipeline import build_pretrain_iterator
from qwen3jax.distill import source as distill_source
from qwen3jax.distill.source import completion_rows, on_policy_draw
from qwen3jax.model import ModelConfig
from qwen3jax.model.factory import create_model
from qwen3jax.sample.budget import STOP_THINKING_TEXT
from qwen3jax.train.evals import chat_prompt_ids
from qwen3jax.train.loop import Trainer, configured_tokenizer_for


@pytest.mark.parametrize("lmbda", [0.0, 0.25, 0.5, 1.0])
def test_the_share_of_on_policy_batches_is_lmbda(lmbda):
    draws = [on_policy_draw(0, i, lmbda) for i in range(4000)]
    assert np.mean(draws) == pytest.approx(lmbda, abs=0.025)
    assert draws == [on_policy_draw(0, i, lmbda) for i in range(4000)]  # reproducible, so resumable
    assert lmbda in (0.0, 1.0) or draws != [on_policy_draw(1, i, lmbda) for i in range(4000)]  # seeded


def _trainer(tmp_path, **batch_source):
    c = distill_on_policy.get_config("tiny")
    c.model.update(vocab_size=8192, hidden_size=32, intermediate_size=64, num_layers=1, num_heads=2,
                   num_kv_heads=1, head_dim=16)  # fmt: skip
    c.seq_len, c.global_batch = 256, 8
    c.batch_source.update(batch_source)
    return Trainer(c, tmp_path)


def test_without_on_policy_batches_the_source_is_the_fixed_dataset_and_resumes(tmp_path):
    trainer = _trainer(tmp_path, lmbda=0.0)
    source = trainer.batch_source()
    rows = build_pretrain_iterator(trainer.config.data, seq_len=256, batch_size=8, seed=0, process_index=0,
                                   process_count=1)  # fmt: skip
    for _ in range(2):
        expected, got = next(rows), source.next(None)  # no state needed: nothing is sampled
        for key, value in expected.items():
            np.testing.assert_array_equal(np.asarray(got[key]), value)
    saved = source.get_state()
    third = source.next(None)
    source.set_state(saved)
    np.testing.assert_array_equal(np.asarray(source.next(None)["tokens"]), np.asarray(third["tokens"]))
    assert source.metrics() == {"on_policy": 0.0} and source.report()["fixed_batches"] == 4


@pytest.mark.parametrize(
    "options, message",
    [({"lmbda": 1.5}, "lmbda"), ({"modes": ["thinking"]}, "modes"), ({"temperature": 0.0}, "temperature"),
     ({"thinking_budget": -2}, "thinking_budget")],
)
def test_bad_source_settings_are_named(tmp_path, options, message):
    with pytest.raises(ValueError, match=message):
        _trainer(tmp_path, **options).batch_source()


SMALL = dict(vocab_size=8192, hidden_size=32, intermediate_size=64, num_layers=1, num_heads=2, num_kv_heads=1,
             head_dim=16)  # fmt: skip


@pytest.mark.parametrize("budget", [0, 3])
def test_a_sample_that_reaches_the_thinking_budget_gets_the_stop_text_untrained(budget):
    """Prompts that end inside a think block (a random model seldom opens one itself): after `budget` sampled
    thinking tokens come exactly the tokens of SPEC §4's text, masked out of the loss; the tokens the student chose
    before and after it are trained."""
    tokenizer = configured_tokenizer_for(distill_on_policy.get_config("tiny"))
    model = create_model(ModelConfig.from_dict(dict(ModelConfig.from_preset("tiny").to_dict(), **SMALL)), seed=0)
    stop_text = tokenizer.encode(STOP_THINKING_TEXT)
    prompts = [chat_prompt_ids(tokenizer, {"prompt": q}, True) + tokenizer.encode("<think>\n")
               for q in ("What is 2 + 2?", "Name a prime.")]  # fmt: skip
    rows, lengths, _ = completion_rows(model, tokenizer, prompts, seq_len=96, thinking_budget=budget, temperature=1.0,
                                       max_new_tokens=budget + len(stop_text) + 4, seed=3)  # fmt: skip
    for row, prompt, length in zip(range(len(prompts)), prompts, lengths):
        completion = rows["tokens"][row, len(prompt) : len(prompt) + length].tolist()
        mask = rows["loss_mask"][row, len(prompt) : len(prompt) + length].tolist()
        assert completion[budget : budget + len(stop_text)] == stop_text
        assert mask == [1] * budget + [0] * len(stop_text) + [1] * (length - budget - len(stop_text))
        assert length > budget + len(stop_text)  # the student answered after the forced text


class Sampled(Exception):
    pass


def test_the_source_samples_with_its_thinking_budget(tmp_path, monkeypatch):
    """The configured budget reaches the student's sampler (the forced tokens' masking is the test above)."""
    seen = {}

    def spy(model, prompt_ids, **kwargs):
        seen.update(kwargs)
        raise Sampled  # enough: the sampler was called

    monkeypatch.setattr(distill_source, "generate", spy)
    trainer = _trainer(tmp_path, thinking_budget=5)
    with pytest.raises(Sampled):
        trainer.batch_source().next(type("State", (), {"model": lambda self: None})())
    assert seen["thinking_budget"] == 5 and seen["thinking"].stop_text_ids

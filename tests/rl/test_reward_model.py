"""The reward model: the pairwise loss against the Bradley–Terry formula in NumPy (value, gradient sign, padding rows,
micro-batch additivity), the reward read at each sequence's last token, the pair source's rows and exact resume,
and (slow) a tiny trained reward model that ranks held-out pairs: through its evaluator, and as the registered
`reward_model` reward reading a run's frozen model (on the run's mesh, shared with the train step) or, outside a run,
its run directory."""

import json
import types

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from experiments import reward_model, sft_chat
from qwen3jax.chat import render_with_jinja
from qwen3jax.rewards import REWARDS, build_reward, build_rewards
from qwen3jax.rl.preference import PreferencePairSource, completion_tokens
from qwen3jax.train.loop import Trainer, configured_tokenizer_for
from qwen3jax.train.losses import LOSSES, last_token_index, sequence_rewards
from tests import qwen3_assets
from tests.chat.conftest import HFTokenizer

from ..train.helpers import TINY_MODEL


class HiddenModel:
    """A stand-in model whose final hidden states are given: with D = 1 and a head row of 1, the reward of a
    sequence is exactly the hidden value at its last token."""

    def __init__(self, hidden_BT, head_token=0, vocab=4):
        self.config = types.SimpleNamespace(vocab_size=vocab, tie_word_embeddings=True)
        self.embed_tokens = jnp.zeros((vocab, 1)).at[head_token, 0].set(1.0)
        self.hidden = hidden_BT

    def __call__(self, tokens, positions, segment_ids, *, head=True):
        assert not head and positions is None and tokens.shape == segment_ids.shape
        return self.hidden[..., None]


SEGMENTS = np.array([[1, 1, 1, 2, 2, 0], [1, 2, 2, 2, 0, 0], [1, 1, 2, 2, 2, 2], [0, 0, 0, 0, 0, 0]])


def test_the_reward_is_read_at_the_last_token_of_each_document():
    np.testing.assert_array_equal(last_token_index(jnp.asarray(SEGMENTS), (1, 2)),
                                  [[2, 4], [0, 3], [1, 5], [-1, -1]])  # fmt: skip
    hidden = jnp.arange(24, dtype=jnp.float32).reshape(4, 6)
    batch = {"tokens": jnp.zeros_like(SEGMENTS), "segment_ids": jnp.asarray(SEGMENTS)}
    rewards, present = sequence_rewards(HiddenModel(hidden, head_token=3), batch, head_token=3)
    np.testing.assert_array_equal(rewards, [[2, 4], [6, 9], [13, 17], [0, 0]])
    np.testing.assert_array_equal(present, [[1, 1], [1, 1], [1, 1], [0, 0]])
    other_row, _ = sequence_rewards(HiddenModel(hidden, head_token=3), batch, head_token=2)  # another head row
    np.testing.assert_array_equal(other_row, np.zeros((4, 2)))


def test_the_pairwise_loss_is_the_bradley_terry_loss_of_numpy():
    rng = np.random.default_rng(0)
    hidden = jnp.asarray(rng.normal(size=(4, 6)) * 3, jnp.float32)
    batch = {"tokens": jnp.zeros_like(SEGMENTS), "segment_ids": jnp.asarray(SEGMENTS)}
    loss_fn = LOSSES.get("pairwise")(head_token=0)
    ctx = loss_fn.context(None, {k: v[None] for k, v in batch.items()})

    def loss_of(h):
        return loss_fn(HiddenModel(h), batch, ctx)

    (loss, metrics), grad = jax.jit(jax.value_and_grad(loss_of, has_aux=True))(hidden)
    h = np.asarray(hidden)
    chosen, rejected = h[[0, 1, 2], [2, 0, 1]], h[[0, 1, 2], [4, 3, 5]]  # the padding row holds no pair
    margin = chosen - rejected
    np.testing.assert_allclose(loss, np.mean(-np.log(1 / (1 + np.exp(-margin)))), rtol=1e-6)
    np.testing.assert_allclose(metrics["accuracy"], np.mean(margin > 0), rtol=1e-6)
    np.testing.assert_allclose(metrics["margin"], np.mean(margin), rtol=1e-6)
    assert float(metrics["pairs"]) == 3
    g = np.asarray(grad)
    # Raising a chosen reward lowers the loss, raising a rejected one raises it, by σ(−margin)/n; nothing else moves.
    np.testing.assert_allclose(g[[0, 1, 2], [2, 0, 1]], -1 / (1 + np.exp(margin)) / 3, rtol=1e-5)
    np.testing.assert_allclose(g[[0, 1, 2], [4, 3, 5]], 1 / (1 + np.exp(margin)) / 3, rtol=1e-5)
    assert np.count_nonzero(g) == 6
    # Normalised by the global pair count: two micro-batches' contributions add up to the whole batch's loss.
    micro = {k: jnp.stack([v[:2], v[2:]]) for k, v in batch.items()}
    ctx2 = loss_fn.context(None, micro)
    half = jax.jit(lambda h, mb: loss_fn(HiddenModel(h), mb, ctx2)[0])
    halves = [half(hidden[i * 2 : i * 2 + 2], {k: v[i] for k, v in micro.items()}) for i in range(2)]
    np.testing.assert_allclose(sum(halves), loss, rtol=1e-6)


@pytest.fixture(scope="module")
def tokenizer():
    return configured_tokenizer_for(sft_chat.get_config("tiny"))


def _source(tokenizer, tmp_path, pairs, seq_len=64, global_batch=4, seed=3):
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(p if isinstance(p, str) else json.dumps(p) for p in pairs) + "\n")
    trainer = types.SimpleNamespace(
        config=types.SimpleNamespace(seq_len=seq_len, global_batch=global_batch, seed=seed),
        layout=types.SimpleNamespace(to_global=lambda rows: rows), loss_fn=LOSSES.get("pairwise")(),
        model_cfg=types.SimpleNamespace(vocab_size=tokenizer.vocab_size), tokenizer=tokenizer,
    )  # fmt: skip
    return PreferencePairSource(trainer, pairs=str(path))


PAIRS = [{"prompt": f"What is {i} + {i}?", "chosen": f"It is {2 * i}.", "rejected": f"It is {2 * i + 1}."}
         for i in range(7)]  # fmt: skip


def test_pair_rows_hold_chosen_then_rejected_and_bad_records_are_counted(tokenizer, tmp_path):
    long = {"prompt": "Say a lot.", "chosen": "word " * 80, "rejected": "nothing"}
    bad = ["{not json", json.dumps({"prompt": "x", "chosen": "a"}), json.dumps({"prompt": "x", "chosen": "a",
                                                                                "rejected": "a"})]  # fmt: skip
    source = _source(tokenizer, tmp_path, [PAIRS[0], long, *bad], global_batch=2)
    report = source.report()["train"]
    assert report["bad_records"] == {"invalid_json": 1, "missing_field": 1, "identical_completions": 1}
    assert report["pairs"] == 2 and report["truncated_sequences"] == 1
    rows = source._train.rows([0, 1], 64)  # in file order
    chosen = completion_tokens(tokenizer, PAIRS[0]["prompt"], PAIRS[0]["chosen"])
    rejected = completion_tokens(tokenizer, PAIRS[0]["prompt"], PAIRS[0]["rejected"])
    assert chosen[-1] == tokenizer.token_to_id("<|im_end|>")
    n, m = len(chosen), len(rejected)
    np.testing.assert_array_equal(rows["tokens"][0, : n + m], chosen + rejected)
    np.testing.assert_array_equal(rows["segment_ids"][0], [1] * n + [2] * m + [0] * (64 - n - m))
    long_chosen = completion_tokens(tokenizer, long["prompt"], long["chosen"])
    np.testing.assert_array_equal(rows["tokens"][1, :32], long_chosen[-32:])  # the end kept: seq_len // 2 tokens


def test_the_pair_source_resumes_exactly(tokenizer, tmp_path):
    source = _source(tokenizer, tmp_path, PAIRS)
    for _ in range(2):
        source.next(None)
    state = json.loads(json.dumps(source.get_state()))  # as a checkpoint stores it
    expected = [source.next(None) for _ in range(3)]  # crosses an epoch boundary (7 pairs, 4 per batch)
    resumed = _source(tokenizer, tmp_path, PAIRS)
    resumed.set_state(state)
    for want, got in zip(expected, [resumed.next(None) for _ in range(3)]):
        for name in ("tokens", "segment_ids"):
            np.testing.assert_array_equal(got[name], want[name])
    fresh = _source(tokenizer, tmp_path, PAIRS)
    assert any(not np.array_equal(fresh.next(None)["tokens"], e["tokens"]) for e in expected)


def test_the_reward_refuses_a_run_that_is_not_a_reward_model(tmp_path):
    (tmp_path / "checkpoints" / "5" / "params").mkdir(parents=True)
    (tmp_path / "config.json").write_text(json.dumps({"loss": {"name": "sft"}, "seq_len": 64}))
    with pytest.raises(ValueError, match="trained with loss 'sft', not 'pairwise': it is not a reward model"):
        REWARDS.get("reward_model")(checkpoint=str(tmp_path))


def test_a_frozen_reward_model_is_asked_of_a_run():
    with pytest.raises(ValueError, match="names a run's frozen model, and there is no run here"):
        build_reward({"name": "reward_model", "frozen": "reward_model"})
    with pytest.raises(ValueError, match="exactly one of them"):
        REWARDS.get("reward_model")()


# Measured (100 steps of this config, seq 256, d=64, from random weights; the embedded held-out pairs): accuracy
# 0.977 overall, code 0.961, instruction 0.977, math 0.992 (math pairs: a whole derivation vs one stopped early with
# an intermediate value as its answer; 0.56 when they differed in one digit of the answer). The issue asks for 0.9
# overall; each domain must clear 0.85.
MIN_ACCURACY = {"all": 0.9, "code": 0.85, "instruction": 0.85, "math": 0.85}
STEPS = 100


def _tiny_reward_model_config():
    config = reward_model.get_config("tiny")
    config.model.update(TINY_MODEL, vocab_size=8192, hidden_size=64, intermediate_size=128)
    config.init_from = ""
    config.seq_len, config.global_batch, config.steps, config.log_every = 256, 16, STEPS, 50
    config.eval.every, config.checkpoint.every = STEPS, STEPS
    config.optim.peak_lr = 3e-3
    return config


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("reward_model")
    Trainer(_tiny_reward_model_config(), run).run()
    return run


@pytest.mark.slow
def test_a_tiny_reward_model_ranks_held_out_pairs(trained_run):
    rows = [json.loads(line) for line in open(trained_run / "metrics.jsonl")]
    evals = {r["step"]: r for r in rows if "eval/pairwise_accuracy" in r}
    assert evals[0]["eval/pairs"] == 384
    final = evals[STEPS]
    for domain, threshold in MIN_ACCURACY.items():
        assert final["eval/pairwise_accuracy" + ("" if domain == "all" else f"/{domain}")] > threshold, final
    assert final["eval/pairwise"] < evals[0]["eval/pairwise"] - 0.3


def _accuracy(reward, pairs) -> dict[str, float]:
    prompts = [p["prompt"] for p in pairs]
    chosen = reward(prompts, [p["chosen"] for p in pairs])
    rejected = reward(prompts, [p["rejected"] for p in pairs])
    assert chosen.mask.all() and rejected.mask.all()
    correct = chosen.scores > rejected.scores
    domains = np.array([p["domain"] for p in pairs])
    return {"all": correct.mean(), **{d: correct[domains == d].mean() for d in ("code", "instruction", "math")}}


@pytest.mark.slow
def test_the_trained_reward_model_scores_completions_as_a_frozen_model_of_the_run(trained_run, tmp_path):
    from qwen3jax.data.corpus.verifiable import preference_pairs

    config = _tiny_reward_model_config()
    config.frozen = ml_collections.ConfigDict({"reward_model": {"path": str(trained_run)}})
    trainer = Trainer(config, tmp_path / "run")
    rewards = build_rewards([{"name": "reward_model", "frozen": "reward_model", "batch_size": 32}],
                            lend=trainer.lend_frozen)  # fmt: skip
    reward = rewards.rewards[0]
    frozen = trainer.frozen_models()["reward_model"]  # what the train step gets: the reward holds no copy of its own
    assert reward.model is frozen and reward.max_len == 128 and reward.tokenizer is trainer.tokenizer
    assert all(leaf.sharding.mesh == trainer.mesh for leaf in jax.tree.leaves(frozen.params))
    with pytest.raises(ValueError, match="add frozen.judge.path"):
        trainer.lend_frozen("judge")
    pairs = preference_pairs("eval")[::4]  # every domain, a quarter of the held-out pairs
    accuracy = _accuracy(reward, pairs)
    assert all(accuracy[domain] > threshold for domain, threshold in MIN_ACCURACY.items()), accuracy
    # Outside a run the same weights load from the run directory on the default device and score the same.
    _, _, alone = build_reward({"name": "reward_model", "checkpoint": str(trained_run), "batch_size": 32})
    some = [p["chosen"] for p in pairs[:8]]
    prompts = [p["prompt"] for p in pairs[:8]]
    np.testing.assert_allclose(alone(prompts, some).scores, reward(prompts, some).scores, rtol=1e-5, atol=1e-5)


def test_a_reply_that_thinks_in_non_thinking_mode_is_scored_as_the_official_template_renders_it():
    """A policy's sample is judged, not imitated: a /no_think reply with a think block (a tiny policy writes them;
    it stopped the pipeline's general RL once) is rendered, reasoning included, as the official template does."""
    directory = qwen3_assets.qwen3_tokenizer_dir()
    tok = HFTokenizer(directory / "tokenizer.json")
    template = json.loads((directory / "tokenizer_config.json").read_text())["chat_template"]
    prompt = [{"role": "user", "content": "What is 2 + 2? /no_think"}]
    reply = "<think>\nadd them\n</think>\n\nIt is 4."
    official = render_with_jinja(template, [*prompt, {"role": "assistant", "content": reply}])
    assert "add them" in official
    assert completion_tokens(tok, prompt, reply) + tok.encode("\n") == tok.encode(official)

"""Greedy decoding over the KV cache: equal to full-forward argmax decoding and to HF `generate`; per-row stops,
early exit, streaming and shape bucketing."""

from __future__ import annotations

import jax
import numpy as np
import pytest
import torch

from qwen3jax.convert import load_hf
from qwen3jax.model import create_model
from qwen3jax.parallel import make_mesh
from qwen3jax.sample import ThinkingTokens, generate
from qwen3jax.sample.engine import _generate

from ..convert.hf_models import save_random
from .helpers import DENSE, MOE, build, greedy_by_full_forward

# Left padding of different depths: 2, 5 and 9 tokens in one prompt bucket of 16.
PROMPTS = [[3, 17, 25, 9, 44], [100, 7, 81, 2, 63, 15, 90, 33, 5], [12, 120]]
STEPS = 12


@pytest.fixture(scope="module")
def dense():
    return build(DENSE, seed=3)


@pytest.fixture(scope="module")
def dense_greedy(dense):
    return generate(dense, PROMPTS, max_new_tokens=STEPS)


@pytest.mark.parametrize("kind", ["dense", "moe"])
def test_greedy_equals_full_forward_argmax(kind, request):
    if kind == "dense":
        model, result = request.getfixturevalue("dense"), request.getfixturevalue("dense_greedy")
    else:
        model = build(MOE, seed=3)
        result = generate(model, PROMPTS, max_new_tokens=STEPS)
    assert result.tokens == greedy_by_full_forward(model, PROMPTS, STEPS)
    assert result.finish_reason == ["length"] * 3 and result.lengths == [STEPS] * 3
    assert all(np.all(lp == 0) for lp in result.logprobs)  # greedy: a point mass


@pytest.mark.parametrize("kind", ["dense", "moe"])
def test_greedy_equals_hf_generate(tmp_path, kind):
    hf = save_random(tmp_path, kind, seed=1)
    _, model = load_hf(tmp_path)
    prompts = [[5, 9, 200, 31], [77, 1, 2, 3, 150, 42, 8], [250]]
    ours = generate(model, prompts, max_new_tokens=10)
    # HF left-pads too; its generate derives positions from the attention mask.
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    with torch.no_grad():
        out = hf.generate(
            ids, attention_mask=mask, max_new_tokens=10, min_new_tokens=10, do_sample=False, use_cache=True,
            pad_token_id=0,
        )
    assert ours.tokens == out[:, width:].tolist()


def test_sharded_model_decodes_like_the_single_device_one(dense_greedy):
    """Parameters over fsdp x tensor, rows over data, KV heads over tensor: the same greedy tokens."""
    mesh = make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    model = create_model(DENSE, seed=3, mesh=mesh)
    prompts = PROMPTS + [PROMPTS[0]]  # 4 rows: divisible by the data axis
    with jax.set_mesh(mesh):
        result = generate(model, prompts, max_new_tokens=STEPS)
    assert result.tokens == dense_greedy.tokens + dense_greedy.tokens[:1]
    with jax.set_mesh(mesh), pytest.raises(ValueError, match="stream needs a single-device model"):
        generate(model, prompts, max_new_tokens=2, stream=print)


def test_stop_ids_stop_each_row_independently(dense, dense_greedy):
    free = dense_greedy.tokens
    stop = free[0][3]  # row 0 emits it at step 3; other rows may or may not
    result = generate(dense, PROMPTS, max_new_tokens=STEPS, stop_ids=[stop, 127])
    for row, tokens in enumerate(free):
        hits = [i for i, t in enumerate(tokens) if t in (stop, 127)]
        if hits:
            assert result.tokens[row] == tokens[: hits[0] + 1] and result.finish_reason[row] == "stop"
        else:
            assert result.tokens[row] == tokens and result.finish_reason[row] == "length"
        assert result.lengths[row] == len(result.tokens[row])
    assert result.finish_reason[0] == "stop" and result.lengths[0] <= 4
    assert any(reason == "length" for reason in result.finish_reason)  # the others went on


def test_stream_sees_every_token_and_loop_exits_when_all_rows_stop(dense, dense_greedy):
    steps = []

    def stream(tokens, emitted):
        steps.append((tokens.copy(), emitted.copy()))

    stops = sorted({tokens[2] for tokens in dense_greedy.tokens})  # every row stops by step 2
    result = generate(dense, PROMPTS, max_new_tokens=STEPS, stop_ids=stops, stream=stream)
    assert max(result.lengths) <= 3 < STEPS
    assert len(steps) == max(result.lengths)  # no decode step after the last row stopped
    for row, tokens in enumerate(result.tokens):
        assert [int(t[row]) for t, e in steps if e[row]] == tokens


def test_bucketing_avoids_recompiles(dense):
    def call(prompts, max_new, **kw):
        generate(dense, prompts, max_new_tokens=max_new, **kw)
        return _generate._cache_size()

    base = call(PROMPTS, 5)
    # Other prompt lengths, generation lengths, stop ids and budgets within the same buckets: no new program.
    assert call([[4] * 16, [1], [2, 3]], 9, stop_ids=[1, 2, 3]) == base
    thinking = ThinkingTokens(start_id=10, end_id=11, stop_text_ids=(12, 11, 13))
    assert call([[7, 8, 10], [9], [5, 6]], 16, stop_ids=[5], thinking=thinking, thinking_budget=[2, None, 0]) == base
    # A longer generation crosses into the next bucket: exactly one more program.
    assert call(PROMPTS, 17) == base + 1


@pytest.mark.parametrize(
    "prompts, kwargs, match",
    [
        ([], {}, "non-empty list of token-id lists"),
        ([[1], []], {}, "prompt 1 must be a non-empty list"),
        ([[1, 500]], {}, r"prompt 0: \[500\] are not token ids in \[0, 128\)"),
        ([[1]], dict(max_new_tokens=0), "max_new_tokens must be a positive int"),
        ([[1]], dict(n=0), "n must be a positive int"),
        ([[1]], dict(temperature=-1.0), "temperature must be >= 0"),
        ([[1]], dict(top_k=0), "top_k must be None or a positive int"),
        ([[1]], dict(top_p=1.5), r"top_p must be None or in \(0, 1\]"),
        ([[1]], dict(presence_penalty=float("nan")), "presence_penalty must be finite"),
        ([[1]], dict(stop_ids=[-1]), r"stop_ids: \[-1\] are not token ids"),
        ([[1]], dict(max_new_tokens=4096), "exceeds the model's max_position_embeddings=4096"),
        ([[1]], dict(vocab_limit=0), r"vocab_limit must be None or an int in \[1, 128\], got 0"),
        ([[1]], dict(vocab_limit=129), r"vocab_limit must be None or an int in \[1, 128\], got 129"),
    ],
)
def test_invalid_arguments_raise_before_any_work(dense, prompts, kwargs, match):
    with pytest.raises(ValueError, match=match):
        generate(dense, prompts, **{"max_new_tokens": 4, **kwargs})

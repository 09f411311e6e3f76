"""Passkey retrieval task (eval/passkey.py): documents of the asked length with the needle where it should be, the
teacher-forced score == greedy decoding, the method configs, and the command line's errors."""

from __future__ import annotations

import numpy as np
import pytest

from qwen3jax.data.tokenizer import default_tokenizer
from qwen3jax.eval import passkey
from qwen3jax.model.config import DualChunk
from qwen3jax.sample import generate

from ..model.helpers import DENSE, build


@pytest.fixture(scope="module")
def tokenizer():
    return default_tokenizer()


@pytest.mark.parametrize("length", [120, 700])
def test_documents_fill_the_length_and_hold_the_key(tokenizer, length):
    unit = len(tokenizer.encode(passkey.FILLER))
    rng = np.random.default_rng(0)
    for depth in (0.0, 0.5, 1.0):
        s = passkey.make_sample(tokenizer, length, rng, depth=depth)
        total = len(s.prompt) + len(s.answer)
        assert length - 2 * unit < total <= length
        assert tokenizer.decode(s.answer).strip() == s.key and len(s.key) == 5
        assert tokenizer.encode(s.text) == s.prompt + s.answer
        fillers_before = s.text.split(passkey.NEEDLE.format(key=s.key))[0].count(passkey.FILLER)
        fillers = s.text.count(passkey.FILLER)
        assert fillers_before == round(depth * fillers)
        assert s.text.endswith(passkey.QUESTION + " " + s.key)
    with pytest.raises(ValueError, match="too short"):
        passkey.make_sample(tokenizer, 20, rng)


def test_training_documents_stay_under_the_trained_length(tokenizer):
    texts = passkey.training_documents(tokenizer, 300, 6, seed=1)
    lengths = [len(tokenizer.encode(t)) for t in texts]
    assert max(lengths) < 300 and len(set(texts)) == 6
    with pytest.raises(ValueError, match="too short"):
        passkey.training_documents(tokenizer, 60, 1, seed=1)


def test_a_share_of_training_documents_is_short(tokenizer):
    bare = len(tokenizer.encode(passkey.INTRO + passkey.NEEDLE.format(key=99999) + passkey.QUESTION + " 99999"))
    short_length, longest = bare + 30, 16 * (bare + 30)  # long ones: >= longest / 8 less a sentence
    lengths = {share: [len(tokenizer.encode(t)) for t in passkey.training_documents(
        tokenizer, longest, 200, seed=2, short_share=share, short_length=short_length)] for share in (0.0, 0.5, 1.0)}
    assert min(lengths[0.0]) > short_length and bare <= min(lengths[1.0]) and max(lengths[1.0]) < short_length
    assert 0.4 < sum(n < short_length for n in lengths[0.5]) / 200 < 0.6
    with pytest.raises(ValueError, match="short_share"):
        passkey.training_documents(tokenizer, longest, 1, seed=1, short_share=1.5)
    with pytest.raises(ValueError, match="short_length"):
        passkey.training_documents(tokenizer, longest, 1, seed=1, short_share=0.5, short_length=bare)


def test_teacher_forced_score_equals_greedy_decoding():
    """An answer equal to the model's greedy continuation is retrieved; one token off (first or last) is not."""
    model = build(DENSE, seed=3)
    prompts = [[3, 17, 25, 9, 44, 8], [100, 7, 5], [12, 120, 30, 31]]
    greedy = generate(model, prompts, max_new_tokens=3).tokens
    samples = [passkey.Sample("", p, g, "", 0.0) for p, g in zip(prompts, greedy)]
    wrong_last = [passkey.Sample("", p, g[:-1] + [(g[-1] + 1) % 128], "", 0.0) for p, g in zip(prompts, greedy)]
    wrong_first = [passkey.Sample("", p, [(g[0] + 1) % 128] + g[1:], "", 0.0) for p, g in zip(prompts, greedy)]
    hits = passkey.retrieved(model, samples + wrong_last + wrong_first, width=10, batch_size=4)
    assert hits == [True] * 3 + [False] * 6


def test_method_configs():
    cfg = DENSE.replace(max_position_embeddings=64)
    rope = passkey.method_config(cfg, "rope", 32, 128, 4.0, 4)
    assert rope.rope_scaling is None and rope.dual_chunk is None and rope.max_position_embeddings == 128
    both = passkey.method_config(cfg, "yarn_dca", 32, 128, 4.0, 4)
    assert both.rope_scaling.factor == 4.0 and both.rope_scaling.original_max_position_embeddings == 32
    assert both.dual_chunk == DualChunk(chunk_size=32, local_size=4)
    assert passkey.method_config(cfg, "dca", 32, 128, 4.0, 4).rope_scaling is None
    with pytest.raises(ValueError, match="unknown method"):
        passkey.method_config(cfg, "alibi", 32, 128, 4.0, 4)


def test_markdown_table():
    results = [
        {"method": m, "length": n, "accuracy": a, "n": 2, "hits": h}
        for m, n, a, h in [("rope", 8, 1.0, [True, True]), ("rope", 16, 0.5, [True, False])]
    ]
    assert passkey.markdown_table(results, 8).splitlines() == [
        "| method | 8 (1x) | 16 (2x) |", "|---|---|---|", "| rope | 1.00 (2/2) | 0.50 (1/2) |"
    ]


def test_command_line_errors(tmp_path, capsys):
    assert passkey.main(["eval", "--ckpt", str(tmp_path / "nothing")]) == 2
    assert "neither a run directory" in capsys.readouterr().err
    (tmp_path / "out").mkdir()
    args = ["data", "--ckpt", str(tmp_path), "--tokenizer", "x.model", "--trained-length", "64", "--out"]
    assert passkey.main(args + [str(tmp_path / "out")]) == 2
    assert "never overwritten" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        passkey.main(["eval", "--ckpt", str(tmp_path), "--methods", "rope,alibi"])

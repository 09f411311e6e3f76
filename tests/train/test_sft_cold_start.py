"""The SFT phases from one tiny pretrained model: the embedded cold-start set is the curation command's output over
the synthetic train problems (every kept answer verified, the report accounts for every query); a tiny cold-start
SFT lowers the held-out masked loss, evaluated with the exact-answer accuracy and the well-formed share (think block
closed, an answer after it) of greedy thinking replies to held-out problems beside it; off-policy distillation on
the teacher's responses in both modes lowers the student's cross-entropy on the teacher's held-out responses.

Not shown at this budget: a rise of the answer accuracy or of the well-formed share, or the fusion switches (see the
xfail). The pretrained model is near the unigram level (next-token loss 6.9 after 40 steps), and 60 SFT steps teach
it the targets' token statistics, not yet their dependence on context. Measured (2 layers, d=64, 40 pretraining +
60 SFT steps, batch 8): accuracy 0/32 and well-formed 0/32 before and after, at peak rate 3e-3 and at 1e-2; greedy
replies open the think block, then repeat tokens ("<think>\\n<think>\\nTheTheThe... The answer is 1111...") up to the
token limit (128 here, 160 measured at 1e-2)."""

import json

import pytest

from experiments import distill_off_policy, pretrain_s1, sft_cold_start, sft_thinking_fusion
from qwen3jax.data.corpus import build, cold_start, distill
from qwen3jax.data.pipeline import build_pretrain_iterator
from qwen3jax.data.stages import chat_sft_config
from qwen3jax.data.sources import open_source
from qwen3jax.posttrain import filters
from qwen3jax.posttrain.verifiers import reward_verifier
from qwen3jax.train.loop import Trainer

MODEL = dict(vocab_size=8192, hidden_size=64, intermediate_size=128, num_layers=2, num_heads=4, num_kv_heads=2,
             head_dim=16, tie_word_embeddings=True)  # fmt: skip  (tied: the thresholds below were measured so)


@pytest.mark.slow
def test_the_embedded_set_is_curated_and_reported():
    verify = reward_verifier("exact_match")
    report = cold_start.curation_report("train")
    source = open_source("embedded", "cold_start", split="train")
    assert len(source) == report["kept_responses"] == report["kept_queries"]
    dropped = report["zero_pass_at_n"]["think"] + report["no_response_passed"]["think"]
    assert report["kept_queries"] + dropped + sum(report["query_rejected"].values()) == report["queries"]
    assert all(report["response_rejected"]["think"][r] > 0 for r in filters.RESPONSE_REASONS if r not in
               ("malformed_thinking", "unverifiable_answer"))  # the teacher draws every other flaw  # fmt: skip
    golds = {p["query"]: p["answer"] for p in build.reasoning_qa_pairs("train")}
    for i in range(0, len(source), 97):  # every kept response answers its problem right, in the thinking format
        record = json.loads(source[i].payload)
        user, assistant = record["messages"]
        assert verify(assistant["content"], golds[user["content"]]) == 1.0
        assert record["enable_thinking"] and assistant["content"].startswith("<think>\n")
    iterator = build_pretrain_iterator(chat_sft_config("cold_start").to_dict(), seq_len=256, batch_size=2, seed=0,
                                       process_index=0, process_count=1)  # fmt: skip
    next(iterator)
    assert iterator.report()["curation"] == {"cold_start": report}  # the run's data_report.json says what was curated


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A tiny model pretrained briefly on the S1 mix (the starting point of both SFT phases here)."""
    workdir = tmp_path_factory.mktemp("pretrain")
    pretrain = pretrain_s1.get_config("tiny")
    pretrain.model.update(MODEL)
    pretrain.steps, pretrain.global_batch, pretrain.seq_len, pretrain.log_every = 40, 8, 256, 10
    pretrain.eval.every, pretrain.samples.num, pretrain.checkpoint.async_save = 0, 0, False
    pretrain.optim.peak_lr, pretrain.optim.warmup_steps = 3e-3, 5
    Trainer(pretrain, workdir).run()
    return str(workdir)


@pytest.mark.slow
def test_cold_start_sft_lowers_the_held_out_loss(tmp_path, pretrained):
    config = sft_cold_start.get_config("tiny")
    config.model.update(MODEL)
    config.init_from = pretrained
    config.steps, config.global_batch, config.log_every = 60, 8, 10
    config.eval.update(every=60, batches=2, num_prompts=32, max_new_tokens=128)
    config.samples.num, config.checkpoint.async_save = 0, False
    config.optim.peak_lr, config.optim.warmup_steps = 3e-3, 5
    Trainer(config, tmp_path / "sft").run()
    rows = [json.loads(line) for line in open(tmp_path / "sft" / "metrics.jsonl")]
    evals = {r["step"]: r for r in rows if "eval/loss" in r}
    # Measured: 5.48 -> 3.40 (eval on 2 batches of held-out curated conversations).
    assert evals[60]["eval/loss"] < evals[0]["eval/loss"] - 1.5
    assert {"eval/accuracy", "eval/reward/format/mean", "eval/completion_len_mean"} <= set(evals[60])


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason=(
    "not learned at this budget. Measured from this pretrained model (next-token loss 6.9 after 40 steps, near the "
    "unigram level): after 60 fusion steps no reply opens a think block (p(<think>) after the assistant header "
    "0.025, the replies repeat the header's newline); re-initialising the 8 chat-template rows (never fed in by "
    "pretraining, nearly one vector: pairwise cosine 0.90 on average, ordinary rows 0.63) to the mean of the other "
    "rows plus per-dimension noise gives 0.032; peak rate 1e-2 for 120 steps gives 0.23 and replies "
    "'<think>\\n\\n<think>...' that follow no flag (think 7/32, no_think 0/32); 150 steps at 3e-3: every reply "
    "opens an empty block whatever the flag"))
def test_fusion_sft_teaches_the_think_and_no_think_switches(tmp_path, pretrained):
    """Fusion SFT straight from the pretrained model (the switch does not need the cold-start run first): greedy
    replies to held-out prompts open an empty think block for >= 95% of /no_think prompts and a non-empty one for
    >= 95% of /think prompts; the pretrained model follows neither."""
    config = sft_thinking_fusion.get_config("tiny")
    config.model.update(MODEL)
    config.init_from = pretrained
    config.steps, config.global_batch, config.log_every = 60, 8, 10
    config.eval.update(every=60, batches=1, num_prompts=32)
    config.samples.num, config.checkpoint.async_save = 0, False
    config.optim.peak_lr, config.optim.warmup_steps = 3e-3, 5
    Trainer(config, tmp_path).run()
    rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    evals = {r["step"]: r for r in rows if "eval/loss" in r}
    assert evals[0]["eval/think_nonempty_frac"] < 0.5 and evals[0]["eval/no_think_empty_frac"] < 0.5
    assert evals[60]["eval/think_nonempty_frac"] >= 0.95 and evals[60]["eval/no_think_empty_frac"] >= 0.95


@pytest.mark.slow
def test_off_policy_distillation_moves_the_student_toward_the_teacher(tmp_path, pretrained):
    """The embedded distillation set holds the teacher's responses in both modes (thinking ones with their worked
    solution, non-thinking ones after the empty think block), and distilling them into the pretrained student lowers
    its cross-entropy on the teacher's held-out responses (the held-out masked loss), i.e. moves it toward the
    teacher."""
    report = distill.curation_report("train")
    source = open_source("embedded", "distill", split="train")
    records = [json.loads(source[i].payload) for i in range(0, len(source), 49)]
    modes = {r["provenance"]["mode"] for r in records}
    assert report["settings"]["modes"] == ["think", "no_think"] and modes == {"think", "no_think"}
    for record in records:
        thinking, reply = record["enable_thinking"], record["messages"][-1]["content"]
        assert thinking == (record["provenance"]["mode"] == "think")
        assert reply.startswith("<think>\n\n</think>\n\n") != thinking
    config = distill_off_policy.get_config("tiny")
    config.model.update(MODEL)
    config.init_from = pretrained
    config.steps, config.global_batch, config.log_every = 30, 8, 10
    config.eval.update(name="held_out_loss", every=30, batches=2)
    config.samples.num, config.checkpoint.async_save = 0, False
    config.optim.peak_lr, config.optim.warmup_steps = 3e-3, 5
    Trainer(config, tmp_path).run()
    rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    evals = {r["step"]: r for r in rows if "eval/loss" in r}
    # Measured: 5.55 -> 4.12 nats per token (2 batches of the teacher's held-out responses, both modes).
    assert evals[30]["eval/loss"] < evals[0]["eval/loss"] - 1.0

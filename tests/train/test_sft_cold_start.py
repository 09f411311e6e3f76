"""The SFT phases from one tiny pretrained model: the embedded cold-start set is the curation command's output over
the synthetic train problems (every kept answer verified, the report accounts for every query); a tiny cold-start
SFT lowers the held-out masked loss, evaluated with the exact-answer accuracy and the well-formed share (think block
closed, an answer after it) of greedy thinking replies to held-out problems beside it; off-policy distillation on
the teacher's responses in both modes lowers the student's cross-entropy on the teacher's held-out responses.

All start from the shared tiny pretrained model (tests/pretrained.py: 150 steps, half the tokens from the embedded
chat set, no soft-switch flags). Cold-start SFT also raises the share of well-formed thinking replies (one think
block, closed, an answer after it) from 0; fusion SFT teaches both switches to most held-out prompts.

Not shown at this budget: a rise of the exact-answer accuracy (1/32 before and after cold start: the replies are
worked-solution shaped, "<think>\\nWork inside parentheses first, dividing the numerators: 100 = 120 ...", with
wrong numbers, some looping on digits), and the issue's >= 95% of /think prompts after fusion (81% measured).
From the earlier start (40 steps, 8192 tokens, tied head, next-token loss 6.9) neither phase showed more than a
falling loss, and with a tied head at this budget both models wrote "<think>\\n<think>\\n..." (well-formed 0/32,
fusion /think blocks holding only a second <think>)."""

import json

import pytest

from experiments import distill_off_policy, sft_cold_start, sft_thinking_fusion
from qwen3jax.data.corpus import build, cold_start, distill
from qwen3jax.data.pipeline import build_pretrain_iterator
from qwen3jax.data.stages import chat_sft_config
from qwen3jax.data.sources import open_source
from qwen3jax.posttrain import filters
from qwen3jax.posttrain.verifiers import reward_verifier
from tests.pretrained import run_on_one_device, start_from_it


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


@pytest.mark.slow
def test_cold_start_sft_lowers_the_held_out_loss(tmp_path, pretrained_tiny):
    config = start_from_it(sft_cold_start.get_config("tiny"), pretrained_tiny)
    config.steps, config.global_batch, config.log_every = 60, 8, 10
    config.eval.update(every=60, batches=2, num_prompts=32, max_new_tokens=128)
    config.optim.peak_lr, config.optim.warmup_steps = 3e-3, 5
    run_on_one_device(config, tmp_path / "sft")
    rows = [json.loads(line) for line in open(tmp_path / "sft" / "metrics.jsonl")]
    evals = {r["step"]: r for r in rows if "eval/loss" in r}
    # Measured: 1.59 -> 1.08 (eval on 2 batches of held-out curated conversations); well-formed replies 0 -> 5/32,
    # exact answers 1/32 -> 1/32.
    assert evals[60]["eval/loss"] < 0.8 * evals[0]["eval/loss"]
    assert evals[0]["eval/reward/format/mean"] == 0 and evals[60]["eval/reward/format/mean"] >= 3 / 32
    assert {"eval/accuracy", "eval/reward/format/mean", "eval/completion_len_mean"} <= set(evals[60])


@pytest.mark.slow
def test_fusion_sft_teaches_the_think_and_no_think_switches(tmp_path, pretrained_tiny):
    """Fusion SFT straight from the pretrained model (the switch does not need the cold-start run first): greedy
    replies to 32 held-out prompts, each asked with /think and with /no_think. The pretrained model mostly opens
    an empty block whatever the flag; after fusion the /no_think replies all do and most /think replies start
    thinking ("<think>\\nWork inside parentheses first, then")."""
    config = start_from_it(sft_thinking_fusion.get_config("tiny"), pretrained_tiny)
    config.steps, config.global_batch, config.log_every = 120, 8, 20
    config.eval.update(every=120, batches=1, num_prompts=32)
    config.optim.peak_lr, config.optim.warmup_steps = 6e-3, 5
    run_on_one_device(config, tmp_path)
    rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    evals = {r["step"]: r for r in rows if "eval/loss" in r}
    # Measured: /think non-empty 0.38 -> 1.0, /no_think empty 0.78 -> 1.0 (60 steps at 3e-3: 0.81 and 1.0; 120 at
    # 3e-3: 0.91; 200 at 3e-3: 1.0).
    assert evals[0]["eval/think_nonempty_frac"] <= 0.5
    assert evals[120]["eval/think_nonempty_frac"] >= 0.95 and evals[120]["eval/no_think_empty_frac"] >= 0.95


@pytest.mark.slow
def test_off_policy_distillation_moves_the_student_toward_the_teacher(tmp_path, pretrained_tiny):
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
    config = start_from_it(distill_off_policy.get_config("tiny"), pretrained_tiny)
    config.steps, config.global_batch, config.log_every = 30, 8, 10
    config.eval.update(name="held_out_loss", every=30, batches=2)
    config.optim.peak_lr, config.optim.warmup_steps = 3e-3, 5
    run_on_one_device(config, tmp_path)
    rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    evals = {r["step"]: r for r in rows if "eval/loss" in r}
    # Measured: 1.55 -> 1.30 nats per token (2 batches of the teacher's held-out responses, both modes).
    assert evals[30]["eval/loss"] < 0.95 * evals[0]["eval/loss"]

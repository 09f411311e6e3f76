"""Long-CoT cold start: the embedded cold-start set is the curation command's output over the synthetic train
problems (every kept answer verified, the report accounts for every query), and a tiny cold-start SFT from a tiny
pretrained model lowers the held-out masked loss and raises the exact-answer accuracy on held-out problems above
the starting model's."""

import json

import pytest

from experiments import pretrain_s1, sft_cold_start
from qwen3jax.data.corpus import build, cold_start
from qwen3jax.data.sources import open_source
from qwen3jax.posttrain import filters
from qwen3jax.posttrain.verifiers import reward_verifier
from qwen3jax.train.loop import Trainer

MODEL = dict(vocab_size=8192, hidden_size=64, intermediate_size=128, num_layers=2, num_heads=4, num_kv_heads=2,
             head_dim=16)  # fmt: skip


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


@pytest.mark.slow
def test_cold_start_sft_lowers_the_held_out_loss_and_raises_the_accuracy(tmp_path):
    pretrain = pretrain_s1.get_config("tiny")
    pretrain.model.update(MODEL)
    pretrain.steps, pretrain.global_batch, pretrain.seq_len, pretrain.log_every = 40, 8, 256, 10
    pretrain.eval.every, pretrain.samples.num, pretrain.checkpoint.async_save = 0, 0, False
    pretrain.optim.peak_lr, pretrain.optim.warmup_steps = 3e-3, 5
    Trainer(pretrain, tmp_path / "pretrain").run()

    config = sft_cold_start.get_config("tiny")
    config.model.update(MODEL)
    config.init_from = str(tmp_path / "pretrain")
    config.steps, config.global_batch, config.log_every = 60, 8, 10
    config.eval.update(every=60, batches=2, num_prompts=32, max_new_tokens=128)
    config.samples.num, config.checkpoint.async_save = 0, False
    config.optim.peak_lr, config.optim.warmup_steps = 3e-3, 5
    Trainer(config, tmp_path / "sft").run()
    rows = [json.loads(line) for line in open(tmp_path / "sft" / "metrics.jsonl")]
    evals = {r["step"]: r for r in rows if "eval/loss" in r}
    print({s: {k: v for k, v in r.items() if k.startswith("eval/")} for s, r in evals.items()})
    assert evals[60]["eval/loss"] < evals[0]["eval/loss"]
    assert evals[60]["eval/accuracy"] > evals[0]["eval/accuracy"]
    report = json.loads((tmp_path / "sft" / "data_report.json").read_text())
    assert report["curation"]["cold_start"] == cold_start.curation_report("train")

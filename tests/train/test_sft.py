"""The chat SFT experiment: a tiny run lowers the held-out masked loss (assistant tokens of held-out
conversations) and logs `loss`; without its starting run it says in one line which run to make first."""

import json

import pytest

from experiments import sft_chat
from qwen3jax.train.loop import Trainer

from .helpers import TINY_MODEL


def test_without_its_starting_run_the_experiment_names_the_run_to_make(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = sft_chat.get_config("tiny")
    config.model.update(TINY_MODEL, vocab_size=8192)
    with pytest.raises(FileNotFoundError, match=r"runs/pretrain_s1 does not exist: make it first \(`make run "
                       r"EXP=pretrain_s1`\) or pass --config.init_from="):  # fmt: skip
        Trainer(config, tmp_path / "run").run()


@pytest.mark.slow
def test_tiny_chat_sft_lowers_the_held_out_masked_loss(tmp_path):
    config = sft_chat.get_config("tiny")
    config.model.update(TINY_MODEL, vocab_size=8192)
    config.init_from = ""
    config.steps, config.global_batch, config.log_every = 40, 8, 10
    config.eval.every, config.eval.batches, config.samples.num = 40, 2, 1
    config.optim.peak_lr, config.optim.warmup_steps = 3e-3, 5
    Trainer(config, tmp_path).run()
    rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    evals = {r["step"]: r["eval/loss"] for r in rows if "eval/loss" in r}
    assert evals[40] < evals[0] - 2.0, evals
    assert all("train/loss" in r for r in rows if "train/ce" in r) and any("train/loss" in r for r in rows)
    report = json.loads((tmp_path / "data_report.json").read_text())
    assert report["bad_input"]["reasoning_chat"]["bad"] == {} and "reasoning_chat" in report["dropped_too_long"]
    samples = (tmp_path / "samples.txt").read_text()
    assert "(thinking)" in samples and "(non-thinking)" in samples and "<think>\n\n</think>\n\n" in samples

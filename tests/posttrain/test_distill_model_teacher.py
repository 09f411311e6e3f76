"""Off-policy distillation from a trained tiny model teacher, end to end: the curation command samples a teacher
*run* (`curate --teacher <run dir> --modes think,no_think`, through the generation engine), its filters keep the
verified, well-formed responses of both modes, and `distill_off_policy` trains a student on them.

Teacher and student start from the shared tiny pretrained model (tests/pretrained.py). The teacher is SFT'd on a
task a tiny model learns within CI's budget (`What is N times 0?`, a one-sentence reasoning in thinking mode, the
boxed answer in both), so its samples are worth keeping; it samples at the report's decoding settings (temperature
0.6 / 0.7), so some are not, and the filters drop those."""

import json
import random

import pytest

from experiments import distill_off_policy, sft_chat
from qwen3jax.posttrain import curate, filters
from qwen3jax.rewards.math import verify_answer
from tests.pretrained import run_on_one_device, start_from_it

REASONING = "Any whole number times zero is zero, so this product is zero as well."  # 14 words: no guess
ANSWER = "The final answer is $\\boxed{0}$."


def _write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def _run(config, workdir):
    run_on_one_device(config, workdir)
    rows = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
    return {r["step"]: r for r in rows if "eval/loss" in r}


def _tiny(config, pretrained, *, steps, lr):
    config = start_from_it(config, pretrained)
    config.seq_len, config.global_batch, config.steps, config.log_every = 128, 16, steps, 10
    config.optim.peak_lr, config.optim.warmup_steps = lr, 5
    return config


@pytest.fixture(scope="module")
def curated(tmp_path_factory, pretrained_tiny):
    """The teacher run and what `curate` kept of its samples for 120 training and 16 held-out queries."""
    root = tmp_path_factory.mktemp("model_teacher")
    problems = [f"What is {n} times 0?" for n in range(10, 78)] + [f"What is 0 times {n}?" for n in range(10, 78)]
    random.Random(0).shuffle(problems)
    held_out, train = problems[:16], problems[16:]
    teacher_data = _write_jsonl(root / "teacher_sft.jsonl", [
        {"messages": [{"role": "user", "content": q},
                      {"role": "assistant", "content": ANSWER} | ({"reasoning_content": REASONING} if think else {})],
         "enable_thinking": think} for q in train for think in (True, False)
    ])  # fmt: skip
    teacher = _tiny(sft_chat.get_config("tiny"), pretrained_tiny, steps=30, lr=1e-2)
    teacher.data.sources = {"teacher": {"kind": "jsonl", "path": teacher_data, "format": "chat", "weight": 1.0}}
    teacher.eval.every = 0
    _run(teacher, root / "teacher")
    for name, queries in (("train", train), ("eval", held_out)):
        _write_jsonl(root / f"{name}_queries.jsonl", [{"id": q, "prompt": q, "gold": "0"} for q in queries])
    for name in ("train", "eval"):
        assert curate.main(["--queries", str(root / f"{name}_queries.jsonl"), "--teacher", str(root / "teacher"),
                            "--modes", "think,no_think", "--n", "2", "--max_new_tokens", "48",
                            "--validation", str(root / "eval_queries.jsonl"),
                            "--output", str(root / f"distill_{name}.jsonl")]) == 0  # fmt: skip
    return root


@pytest.mark.slow
def test_curate_keeps_the_teacher_runs_verified_samples_in_both_modes(curated):
    report = json.loads((curated / "distill_train.jsonl.report.json").read_text())
    records = [json.loads(line) for line in open(curated / "distill_train.jsonl")]
    assert report["teacher"] == str(curated / "teacher") and report["queries"] == 120
    assert len(records) == report["kept_responses"] > 0
    modes = [r["provenance"]["mode"] for r in records]
    # Measured: 72 think and 120 no_think responses kept; 154 of the 240 thinking samples malformed (e.g. an empty
    # block), 48 queries with no well-formed thinking sample (zero pass@2).
    assert modes.count("think") > 40 and modes.count("no_think") > 60, report
    for record in records:
        response = record["messages"][-1]["content"]
        assert filters.ResponseFilters(verify_answer).rejection(  # kept only what passes every filter
            record["messages"][0]["content"], response, "0", thinking=record["enable_thinking"]) is None
        assert record["enable_thinking"] == (record["provenance"]["mode"] == "think")
        assert record["provenance"]["teacher"] == str(curated / "teacher")


@pytest.mark.slow
def test_the_student_moves_toward_the_model_teacher(curated, pretrained_tiny):
    """A student trained from the pretrained model on the teacher's kept responses: its cross-entropy on the
    teacher's held-out responses (both modes) falls and its greedy thinking replies to held-out queries reach the
    teacher's answer."""
    student = _tiny(distill_off_policy.get_config("tiny"), pretrained_tiny, steps=30, lr=1e-2)
    student.data.sources = {"distill": {
        "kind": "jsonl", "path": str(curated / "distill_train.jsonl"), "eval_path": str(curated / "distill_eval.jsonl"),
        "format": "chat", "weight": 1.0,
    }}  # fmt: skip
    prompts = _write_jsonl(curated / "student_prompts.jsonl", [
        {"prompt": r["prompt"], "gold": "0", "rewards": [{"name": "exact_match"}]}
        for r in map(json.loads, open(curated / "eval_queries.jsonl"))
    ])  # fmt: skip
    student.eval.update(parts=["held_out_loss", "held_out_reward"], every=30, batches=1, prompts=prompts,
                        num_prompts=16, max_new_tokens=48)  # fmt: skip
    evals = _run(student, curated / "student")
    # Measured: 2.12 -> 0.03 nats per token; accuracy 0/16 -> 16/16 (its thinking-mode replies mostly take the
    # empty block, as most kept responses have it).
    assert evals[30]["eval/loss"] < 0.1 * evals[0]["eval/loss"], evals
    assert evals[0]["eval/accuracy"] == 0.0 and evals[30]["eval/accuracy"] >= 0.9, evals


def test_a_teacher_that_is_no_checkpoint_is_one_error_line(tmp_path, capsys):
    (tmp_path / "queries.jsonl").write_text(json.dumps({"prompt": "What is 3 times 0?", "gold": "0"}) + "\n")
    (tmp_path / "not_a_run").mkdir()
    assert curate.main(["--queries", str(tmp_path / "queries.jsonl"), "--teacher", str(tmp_path / "not_a_run"),
                        "--output", str(tmp_path / "out.jsonl")]) == 1  # fmt: skip
    error = capsys.readouterr().err
    assert error.startswith(f"error: --teacher/--instruct {tmp_path / 'not_a_run'}: ") and "neither a run" in error
    assert not (tmp_path / "out.jsonl").exists()

"""The evaluation harness: the log-likelihood scorer against per-token log-softmax, pass@k against its formula and
brute force, Wilson against a textbook value, task loading (field mappings, bad records by reason), and the command
end to end on a tiny native checkpoint (bookkeeping against the samples, caching, the budget curve, one-line errors)."""

from __future__ import annotations

import importlib.util
import itertools
import json
import math
import shutil
from collections.abc import Sequence
from typing import Any

import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import nnx

from qwen3jax.convert import save_hf
from qwen3jax.convert.native import save_native
from qwen3jax.data.badinput import BadInputError
from qwen3jax.data.cache import cache_root
from qwen3jax.data.corpus.build import DEFAULT_CORPUS, corpus_key
from qwen3jax.data.tokenizer import default_tokenizer
from qwen3jax.eval import __main__ as eval_cli
from qwen3jax.eval import metrics, runner
from qwen3jax.eval.checkpoints import checkpoint_kind, load_checkpoint
from qwen3jax.eval.loglik import score_continuations
from qwen3jax.eval.tasks import load_task, math_choice_records
from qwen3jax.rewards import REWARDS, RewardResult

from ..sample.helpers import DENSE, build, full_forward_logits, log_softmax


# ------------------------------------------------------------------------------------------------- scoring
def test_continuation_logprob_equals_per_token_log_softmax():
    model = build(DENSE, seed=3)
    rng = np.random.default_rng(0)
    pairs = [
        (rng.integers(0, 128, size=c).tolist(), rng.integers(0, 128, size=x).tolist())
        for c, x in [(1, 1), (5, 3), (17, 2), (3, 9), (8, 8)]
    ]
    # One greedy continuation, so that the argmax flag is checked both ways.
    context = pairs[1][0]
    greedy_next = int(np.argmax(full_forward_logits(model, [context], 32)[0, len(context) - 1]))
    pairs.append((context, [greedy_next]))
    got = score_continuations(model, pairs, batch_size=4)  # two batches, the second padded
    logits = full_forward_logits(model, [c + x for c, x in pairs], 32)
    for row, ((context, continuation), score) in enumerate(zip(pairs, got)):
        logp = log_softmax(logits[row])
        per_token = [logp[len(context) - 1 + i, t] for i, t in enumerate(continuation)]
        argmax_ok = all(np.argmax(logp[len(context) - 1 + i]) == t for i, t in enumerate(continuation))
        assert score.logprob == pytest.approx(sum(per_token), abs=1e-4)
        assert score.tokens == len(continuation) and score.greedy == argmax_ok
    assert got[-1].greedy


def test_pass_at_k_matches_formula_and_brute_force():
    for n in range(1, 7):
        for c in range(n + 1):
            outcomes = [1] * c + [0] * (n - c)
            for k in range(1, n + 1):
                draws = list(itertools.combinations(outcomes, k))
                brute = sum(any(d) for d in draws) / len(draws)
                formula = 1 - math.comb(n - c, k) / math.comb(n, k)
                assert metrics.pass_at_k(n, c, k) == pytest.approx(brute, abs=1e-12)
                assert metrics.pass_at_k(n, c, k) == pytest.approx(formula, abs=1e-12)
    assert metrics.pass_at_k(200, 13, 100) == pytest.approx(1 - math.comb(187, 100) / math.comb(200, 100))
    assert metrics.ks_for(10) == [1, 2, 4, 8, 10]


def test_wilson_interval_and_ci_choice():
    low, high = metrics.wilson_interval(8, 10)
    assert (low, high) == (pytest.approx(0.4902, abs=1e-4), pytest.approx(0.9433, abs=1e-4))  # textbook value
    assert metrics.summarise([1, 0, 1, 1])["ci_method"].startswith("wilson")
    fractional = metrics.summarise([0.5, 1.0, 0.0, 0.25])
    assert fractional["ci_method"].startswith("bootstrap") and fractional["ci"][0] <= 0.4375 <= fractional["ci"][1]


# ---------------------------------------------------------------------------------------------------- tasks
def _write_jsonl(path, records: Sequence[Any]) -> None:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))


def test_gsm8k_and_math_layouts_map_to_verifiable_records(tmp_path):
    _write_jsonl(tmp_path / "gsm.jsonl", [{"question": "2+3?", "answer": "2+3=5\n#### 1,005"}])
    (tmp_path / "gsm.json").write_text(json.dumps({"layout": "gsm8k", "data": "gsm.jsonl"}))
    (record,) = load_task(str(tmp_path / "gsm.json")).records
    assert record["gold"] == "1005" and record["prompt"].startswith("2+3?") and record["rewards"] == [{"name": "math"}]
    assert "\\boxed{}" in record["prompt"] and "question" not in record

    _write_jsonl(tmp_path / "m.jsonl", [{"problem": "Half of 1?", "solution": "So $\\boxed{\\frac{1}{2}}$."}])
    (tmp_path / "m.json").write_text(json.dumps({"layout": "math", "data": "m.jsonl", "name": "hendrycks"}))
    task = load_task(str(tmp_path / "m.json"))
    assert task.name == "hendrycks" and task.records[0]["gold"] == "\\frac{1}{2}"

    # A declared mapping without a preset, on a multiple-choice file with letter answers.
    _write_jsonl(tmp_path / "mc.jsonl", [{"q": f"q{i}", "options": ["a", "b", "c"], "label": "C"} for i in range(3)])
    (tmp_path / "mc.json").write_text(json.dumps({
        "kind": "multiple_choice", "data": "mc.jsonl", "fields": {"question": "q", "choices": "options",
                                                                  "answer": "label"}, "few_shot": 1}))
    task = load_task(str(tmp_path / "mc.json"))
    assert [r["prompt"] for r in task.few_shot] == ["q0"] and [r["prompt"] for r in task.records] == ["q1", "q2"]
    assert task.records[0]["answer"] == 2


def test_bad_task_records_are_counted_by_reason(tmp_path):
    good = {"question": "1+1?", "answer": "#### 2"}
    _write_jsonl(tmp_path / "gsm.jsonl", [good, {"question": "x", "answer": "no final line"}, {"answer": "#### 3"},
                                          "not json", [1, 2], good])  # fmt: skip
    config = {"layout": "gsm8k", "data": "gsm.jsonl"}
    (tmp_path / "strict.json").write_text(json.dumps(config))
    with pytest.raises(BadInputError) as error:
        load_task(str(tmp_path / "strict.json"))
    assert "'unmapped_field': 2" in str(error.value) and "'malformed_json': 1" in str(error.value)
    (tmp_path / "lenient.json").write_text(json.dumps(dict(config, max_bad_fraction=0.9)))
    task = load_task(str(tmp_path / "lenient.json"))
    assert len(task.records) == 2
    assert task.data_report["bad"] == {"malformed_json": 1, "not_an_object": 1, "unmapped_field": 2}

    _write_jsonl(tmp_path / "mc.jsonl", [{"prompt": "p", "choices": ["a", "a"], "answer": 0},
                                         {"prompt": "p", "choices": ["a", "b"], "answer": 2},
                                         {"choices": ["a", "b"], "answer": 0}])  # fmt: skip
    with pytest.raises(BadInputError, match="'bad_choices': 2, 'missing_prompt': 1"):
        load_task(str(tmp_path / "mc.jsonl"))


def test_builtin_math_choice_task_holds_the_gold_among_distinct_neighbours():
    records = math_choice_records("eval", 20)
    assert len(records) >= 15
    assert all(len(set(r["choices"])) == 4 for r in records)
    golds = {r["id"]: r["gold"] for r in load_task("math").records}
    assert all(r["choices"][r["answer"]] == golds[r["id"]] for r in records)
    assert len({r["answer"] for r in records}) > 1  # the right answer is not always in one place


# ------------------------------------------------------------------------------------------ end to end
CFG = DENSE.replace(vocab_size=512, max_position_embeddings=512)


@REWARDS.register("test_eval_parity")
class _ParityReward:
    """1 for an even number of characters, masked when the length is a multiple of 5 (a could-not-judge case)."""

    def __call__(self, prompts, completions, **fields) -> RewardResult:
        return RewardResult.from_judgements(
            ["length_multiple_of_5" if len(c) % 5 == 0 else float(len(c) % 2 == 0) for c in completions]
        )


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    default_tokenizer(512)
    tokenizer = cache_root() / "tokenizers" / f"spm-bpe-512-{corpus_key(DEFAULT_CORPUS)}" / "tokenizer.model"
    save_native(build(CFG, seed=5), root / "native")
    shutil.copy(tokenizer, root / "tokenizer.model")
    prompts = ["What is two plus two?", "Name a colour.", "Say hello.", "Count to three."]
    _write_jsonl(root / "task.jsonl", [{"id": f"p{i}", "prompt": p, "rewards": [{"name": "test_eval_parity"}]}
                                       for i, p in enumerate(prompts)])  # fmt: skip
    return root


def _args(root, *extra: str) -> list[str]:
    return ["--ckpt", str(root / "native"), "--tokenizer", str(root / "tokenizer.model"), "--tasks",
            str(root / "task.jsonl"), "--out", str(root / "out"), "--max_new_tokens", "12", *extra]  # fmt: skip


def test_generation_task_bookkeeping_and_cache(checkpoint, monkeypatch):
    args = eval_cli.parser().parse_args(_args(checkpoint, "--n", "4", "--mode", "no_think"))
    (result,) = eval_cli.main_args(args)
    assert not result["cached"] and result["records"] == 4 and result["n"] == 4
    assert result["settings"]["decoding"] == {"temperature": 0.7, "top_p": 0.8, "top_k": 20, "presence_penalty": 0.0}
    name = runner.result_name(load_task(str(checkpoint / "task.jsonl")), runner.Settings(mode="no_think"),
                              result["cache_key"])  # fmt: skip
    samples = [json.loads(line) for line in (checkpoint / "out" / f"{name}.samples.jsonl").read_text().splitlines()]
    assert len(samples) == 16 and all(s["completion"].startswith("<think>\n\n</think>\n\n") for s in samples)
    reopened = [s["completion"].count("<think>") > 1 for s in samples]  # past the prefix's empty block
    assert result["stats"]["think_reopened"] == pytest.approx(np.mean(reopened))
    # The metrics again, from the stored completions and the reward's definition.
    by_record: dict[str, list] = {}
    for s in samples:
        n_chars = len(s["completion"])
        assert s["judged"] == (n_chars % 5 != 0) and s["score"] == (float(n_chars % 2 == 0) if s["judged"] else 0.0)
        by_record.setdefault(s["id"], []).append(s)
    for k in (1, 2, 4):
        values = []
        for rows in by_record.values():
            judged = [s for s in rows if s["judged"]]
            if len(judged) >= k:
                values.append(metrics.pass_at_k(len(judged), sum(s["score"] == 1 for s in judged), k))
        assert result["metrics"][f"pass@{k}"]["value"] == (pytest.approx(np.mean(values)) if values else None)
    unjudged = sum(not s["judged"] for s in samples)
    assert sum(result["unjudged_samples"].values()) == unjudged

    # A rerun is the stored result; a changed setting or --no-cache computes again.
    def fail(*a, **k):
        raise AssertionError("a cached run generated again")

    monkeypatch.setattr(runner, "generate", fail)
    (again,) = eval_cli.main_args(args)
    assert again["cached"] and again["metrics"] == result["metrics"]
    for extra in (("--n", "4", "--mode", "no_think", "--no-cache"), ("--n", "4", "--mode", "no_think", "--seed", "1")):
        with pytest.raises(AssertionError, match="cached run generated again"):
            eval_cli.main_args(eval_cli.parser().parse_args(_args(checkpoint, *extra)))
    assert "| task.jsonl" not in (checkpoint / "out" / "results.md").read_text()
    assert "| task | no_think | - | 4 | 4 | pass@1 |" in (checkpoint / "out" / "results.md").read_text()


def test_budget_curve_writes_table_and_png(checkpoint):
    args = eval_cli.parser().parse_args(_args(checkpoint, "--budgets", "0,8", "--limit", "2", "--out",
                                              str(checkpoint / "curve")))  # fmt: skip
    results = eval_cli.main_args(args)
    assert [(r["mode"], r["budget"]) for r in results] == [("think", 0), ("think", 8), ("no_think", None)]  # fmt: skip
    table = (checkpoint / "curve" / "task-budget-curve.md").read_text().splitlines()
    assert len(table) == 2 + 3 and table[2].startswith("| think | 0 | pass@1 |")
    assert (checkpoint / "curve" / "task-budget-curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Budget 0: the stop-thinking text closes the opened think block at once.
    name = runner.result_name(load_task(str(checkpoint / "task.jsonl")).limited(2),
                              runner.Settings(budget=0), results[0]["cache_key"])  # fmt: skip
    first = json.loads((checkpoint / "curve" / f"{name}.samples.jsonl").read_text().splitlines()[0])
    assert first["completion"].startswith("<think>\nConsidering the limited")  # 12 tokens


def test_multiple_choice_task_end_to_end(checkpoint, tmp_path):
    records = [{"id": "a", "prompt": "Pick one.", "choices": ["red", "blue", "green"], "answer": 1},
               {"id": "b", "prompt": "Another.", "choices": ["yes", "no"], "answer": "A"}]  # fmt: skip
    _write_jsonl(tmp_path / "mc.jsonl", records)
    args = eval_cli.parser().parse_args(_args(checkpoint, "--out", str(tmp_path / "out")))
    args.tasks = str(tmp_path / "mc.jsonl")
    (result,) = eval_cli.main_args(args)
    assert result["kind"] == "multiple_choice" and result["primary"] == "acc" and result["records"] == 2
    name = f"mc-loglik-{result['cache_key']}"
    stored = [json.loads(line) for line in (tmp_path / "out" / f"{name}.samples.jsonl").read_text().splitlines()]
    accuracy = np.mean([int(np.argmax(s["logprobs"])) == s["answer"] for s in stored])
    assert result["metrics"]["acc"]["value"] == accuracy and [len(s["logprobs"]) for s in stored] == [3, 2]


def test_checkpoint_tokenizer_mismatch_is_one_line(checkpoint, tmp_path, capsys):
    save_native(build(DENSE, seed=1), tmp_path / "small")  # 128-token vocabulary, tokenizer has 512
    code = eval_cli.main(["--ckpt", str(tmp_path / "small"), "--tokenizer", str(checkpoint / "tokenizer.model"),
                          "--tasks", "math", "--out", str(tmp_path / "out")])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "checkpoint/tokenizer mismatch" in err
    assert eval_cli.main(["--ckpt", str(tmp_path / "small"), "--tasks", "nope"]) == 2
    assert "unknown task 'nope'" in capsys.readouterr().err


def test_run_directory_loads_its_newest_checkpoint_with_the_runs_tokenizer(tmp_path, checkpoint):
    spec = importlib.util.spec_from_file_location("s1", "experiments/pretrain_s1.py")
    experiment = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(experiment)
    config = json.loads(experiment.get_config("tiny").to_json_best_effort())
    config["model"], config["data"]["vocab_size"] = CFG.to_dict(), 512
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(config))
    models = {step: build(CFG, seed=step) for step in (3, 10)}
    with ocp.StandardCheckpointer() as checkpointer:
        for step, model in models.items():
            checkpointer.save(run / "checkpoints" / str(step) / "params", nnx.to_pure_dict(nnx.state(model, nnx.Param)))
        checkpointer.wait_until_finished()
    tokens = [list(range(1, 9))]
    for path, step in ((run, 10), (run / "checkpoints" / "3", 3)):
        chat, _ = load_checkpoint(path)
        assert chat.tokenizer.vocab_size == 512
        expected = full_forward_logits(models[step], tokens, 8)
        np.testing.assert_array_equal(full_forward_logits(chat.model, tokens, 8), expected)
    assert eval_cli.default_out(run) == run / "eval"
    # Native and HF folders of the same model load to the same logits.
    save_hf(models[3], CFG, tmp_path / "hf")
    save_native(models[3], tmp_path / "native")
    for folder, kind in ((tmp_path / "hf", "hf"), (tmp_path / "native", "native")):
        assert checkpoint_kind(folder) == kind
        chat, _ = load_checkpoint(folder, str(checkpoint / "tokenizer.model"))
        np.testing.assert_allclose(full_forward_logits(chat.model, tokens, 8), expected, atol=1e-5)

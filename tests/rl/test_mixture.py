"""General RL's task mixture (`rl/mixture.py`): the drawn tasks follow the configured shares, each group is scored by
its task's rewards exactly as calling those rewards directly scores it, the metrics describe the trained batch (also
after dynamic-sampling refills), a restored source continues with the same draws, and the experiment's mixture is
well formed. Sampling is replaced by fixed replies (`generate` stubbed), so only the mixture's own logic runs."""

import json
import types

import numpy as np
import pytest

from experiments import rl_general
from qwen3jax.chat import encode_prompt
from qwen3jax.data.tokenizer import default_tokenizer
from qwen3jax.data.verifiable import load_verifiable, validate_record
from qwen3jax.rewards.format import FormatReward
from qwen3jax.rewards.ifeval import InstructionReward
from qwen3jax.rewards.judge import JudgeReward
from qwen3jax.rl import mixture
from qwen3jax.rl import source as rollout_source
from qwen3jax.sample.result import GenerationResult

# The replies of every group, sample j gets REPLIES[j]: formats and constraints that differ per reply.
REPLIES = [
    "<think>\n\n</think>\n\nthe lantern glows",  # empty think block, lowercase, keyword
    "<think>\nLet me see.\n</think>\n\nThe Lantern shines",  # thinking, not lowercase, keyword
    "just some text",  # no think block at all
    "<think>\n\n</think>\n\nSCORE it",  # empty think block, neither
]
TOK = default_tokenizer(8192)
STOP = TOK.token_to_id("<|im_end|>")


def _judge(texts):
    """A stub judge: 10 when the response names the lantern, else 2."""
    return ["Score: 10" if "lantern" in t.split("Response:\n")[1].lower() else "Score: 2" for t in texts]


def _write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def _tasks(tmp_path, instruction_share=0.5):
    instruction = [{"prompt": f"Describe item {i}.", "constraints": c, "rewards": [{"name": "ifeval"}]}
                   for i, c in enumerate([[{"id": "lowercase"}], [{"id": "keywords_include", "keywords": ["lantern"]}],
                                          [{"id": "lowercase"}, {"id": "keywords_include", "keywords": ["lantern"]}]])]
    follow = [{"messages": [{"role": "user", "content": f"Hi {i}. {a}"}, {"role": "assistant", "content": "Hello."},
                            {"role": "user", "content": f"Tell me about {i}. {b}"}], "rewards": [{"name": "format"}]}
              for i, (a, b) in enumerate([("/think", "/no_think"), ("/no_think", "/think")])]
    qa = [{"prompt": f"Name object {i}.", "reference": "a lantern", "rewards": [{"name": "judge"}]} for i in range(3)]
    return {
        "instruction": {"prompts": _write(tmp_path / "instruction.jsonl", instruction), "mode": "mixed",
                        "share": instruction_share, "rewards": [{"name": "ifeval"}, {"name": "format", "weight": 0.5}]},
        "thinkfollow": {"prompts": _write(tmp_path / "follow.jsonl", follow), "mode": "given", "share": 0.3,
                        "rewards": [{"name": "format"}]},
        "qa": {"prompts": _write(tmp_path / "qa.jsonl", qa), "mode": "no_think", "share": 0.2,
               "rewards": [{"name": "judge", "generate": _judge}]},
    }  # fmt: skip


def _fake_generate(replies_of):
    """`generate` answering every prompt's samples with `replies_of(call)` (one text per sample)."""
    calls = []

    def generate(model, prompts, *, n, **_):
        calls.append(list(prompts))
        texts = replies_of(len(calls) - 1)
        tokens = [TOK.encode(texts[j]) + [STOP] for _ in prompts for j in range(n)]
        zeros = [np.zeros(len(t), np.float32) for t in tokens]
        return GenerationResult(tokens, zeros, zeros, [np.zeros(len(t), bool) for t in tokens], ["stop"] * len(tokens),
                                [len(t) for t in tokens])  # fmt: skip

    return generate, calls


def _source(tasks, *, global_batch=16, seed=0, seq_len=256, **options):
    config = types.SimpleNamespace(global_batch=global_batch, seed=seed, seq_len=seq_len, rewards=[])
    trainer = types.SimpleNamespace(config=config, layout=types.SimpleNamespace(to_global=lambda rows: rows),
                                    tokenizer=TOK, lend_frozen=None)  # fmt: skip
    return mixture.MixtureSource(trainer, tasks=tasks, group_size=4, **options)


def _direct(record):
    """Each reward of the record's task applied directly to the four replies, and the task's weighted total."""
    prompts, completions = [record["messages"]] * 4, REPLIES
    if record["task"] == "instruction":
        ifeval = InstructionReward()(prompts, completions, constraints=[record["constraints"]] * 4).scores
        fmt = FormatReward()(prompts, completions).scores
        return {"ifeval": ifeval, "format": fmt}, ifeval + 0.5 * fmt
    if record["task"] == "thinkfollow":
        fmt = FormatReward()(prompts, completions).scores
        return {"format": fmt}, fmt
    judge = JudgeReward(generate=_judge)(prompts, completions, reference=[record["reference"]] * 4).scores
    return {"judge": judge}, judge


def test_drawn_tasks_follow_the_shares_and_each_task_its_own_stream(tmp_path):
    slots = mixture.parse_tasks(_tasks(tmp_path, instruction_share=1.0))  # shares 1 : 0.3 : 0.2
    records = {s.name: load_verifiable(s.prompts, "train") for s in slots}
    mix = mixture.TaskMixture(slots, records, seed=5)
    drawn = mix.take(6000)
    counts = {name: sum(r["task"] == name for r in drawn) for name in records}
    for name, share in (("instruction", 1 / 1.5), ("thinkfollow", 0.3 / 1.5), ("qa", 0.2 / 1.5)):
        sigma = np.sqrt(6000 * share * (1 - share))
        assert abs(counts[name] - 6000 * share) < 4 * sigma, (name, counts)
    # "mixed": either switch, about equally often; "no_think": always its switch; "given": the data's own.
    last_user = [r["messages"][-1]["content"] for r in drawn]
    mixed = [c.rsplit(" ", 1)[1] for c, r in zip(last_user, drawn) if r["task"] == "instruction"]
    assert abs(mixed.count("/think") - len(mixed) / 2) < 4 * np.sqrt(len(mixed) / 4)
    assert set(mixed) == {"/think", "/no_think"}
    assert all(c.endswith("/no_think") for c, r in zip(last_user, drawn) if r["task"] == "qa")
    given = [r["messages"] for r in drawn if r["task"] == "thinkfollow"]
    assert all(m in [f["messages"] for f in records["thinkfollow"]] for m in given)
    # Each task reads its records in its own seeded order: every epoch of 3 records holds each record once.
    qa = [r["messages"][0]["content"].removesuffix(" /no_think") for r in drawn if r["task"] == "qa"][:9]
    for epoch in range(3):
        assert sorted(qa[3 * epoch : 3 * epoch + 3]) == [f"Name object {i}." for i in range(3)]


def test_prepare_appends_the_switch_to_the_last_user_turn_only(tmp_path):
    slot = mixture.parse_tasks(_tasks(tmp_path))[1]
    record = load_verifiable(slot.prompts, "train")[0]
    out = slot.prepare(record, "/think")
    assert out["messages"][:2] == record["messages"][:2] and out["task"] == "thinkfollow"
    assert out["messages"][2]["content"] == record["messages"][2]["content"] + " /think"
    assert slot.prepare(record, None)["messages"] == record["messages"]


def test_each_group_is_scored_by_its_tasks_rewards_as_direct_calls_score_it(tmp_path, monkeypatch):
    generate, _ = _fake_generate(lambda call: REPLIES)
    monkeypatch.setattr(rollout_source, "generate", generate)
    source = _source(_tasks(tmp_path))
    records = source.records  # every task's records, with fixed switches
    assert {r["task"] for r in records} == {"instruction", "thinkfollow", "qa"}
    rewards, judged = source.sample_and_score(None, records)
    assert judged.all()
    for record, got in zip(records, rewards):
        np.testing.assert_allclose(got, _direct(record)[1], err_msg=record["task"])
    # The instruction task's rewards really differ per reply (the check is not vacuous).
    assert len({tuple(_direct(r)[1]) for r in records if r["task"] == "instruction"}) > 1


def test_the_step_metrics_describe_the_trained_batch(tmp_path, monkeypatch):
    generate, calls = _fake_generate(lambda call: REPLIES)
    monkeypatch.setattr(rollout_source, "generate", generate)
    source = _source(_tasks(tmp_path), global_batch=48)  # 12 prompts
    source.next(types.SimpleNamespace(model=lambda: None))
    metrics = source.metrics()
    # Recover the batch's records from the prompts the sampler saw.
    variants = [r for r in source.records] + [
        slot.prepare(raw, switch) for slot in source.slots for raw in load_verifiable(slot.prompts, "train")
        for switch in ("/think", "/no_think", None)
    ]  # fmt: skip
    by_ids = {tuple(encode_prompt(TOK, r["messages"])): r for r in variants}
    batch = [by_ids[tuple(ids)] for ids in calls[0]]
    parts = {}
    for record in batch:
        for label, scores in _direct(record)[0].items():
            parts.setdefault(label, []).extend(scores)
    for label, scores in parts.items():  # "format": over the instruction and the thinkfollow groups
        assert metrics[f"reward/{label}"] == pytest.approx(np.mean(scores)), label
    totals = np.concatenate([_direct(r)[1] for r in batch])
    assert metrics["reward_mean"] == pytest.approx(totals.mean())
    assert metrics["reward_std"] == pytest.approx(totals.std())
    for name in {r["task"] for r in batch}:
        mine = [r for r in batch if r["task"] == name]
        assert metrics[f"task/{name}/reward_mean"] == pytest.approx(np.concatenate([_direct(r)[1] for r in mine]).mean())
        assert metrics[f"task/{name}/groups_frac"] == pytest.approx(len(mine) / len(batch))


def test_with_refills_every_reward_metric_is_the_trained_batchs(tmp_path, monkeypatch):
    """The first round's replies are all alike (no group has a signal); the refill's differ. `reward/ifeval` and
    `reward_mean` both describe the refilled, trained batch (a task with the one reward `ifeval`)."""
    alike = ["JUST TEXT"] * 4  # follows no constraint: reward 0 in every first-round group
    generate, calls = _fake_generate(lambda call: alike if call == 0 else REPLIES)
    monkeypatch.setattr(rollout_source, "generate", generate)
    tasks = _tasks(tmp_path)
    tasks = {"instruction": dict(tasks["instruction"], rewards=[{"name": "ifeval"}], mode="no_think")}
    source = _source(tasks, dynamic_sampling=True, max_refills=1)
    source.next(types.SimpleNamespace(model=lambda: None))
    metrics = source.metrics()
    assert len(calls) == 2 and metrics["refill_rounds"] == 1 and metrics["zero_std_groups_frac"] < 1
    assert metrics["reward/ifeval"] == pytest.approx(metrics["reward_mean"]) and metrics["reward_mean"] > 0


def test_a_restored_source_draws_the_same_tasks_prompts_and_rows(tmp_path, monkeypatch):
    def replies_of(call):
        rng = np.random.default_rng(call)
        return [REPLIES[k] for k in rng.integers(0, 4, 4)]

    state_obj = types.SimpleNamespace(model=lambda: None)
    generate, calls = _fake_generate(replies_of)
    monkeypatch.setattr(rollout_source, "generate", generate)
    straight = _source(_tasks(tmp_path), seed=3)
    straight.next(state_obj)
    saved = json.loads(json.dumps(straight.get_state()))
    expected = straight.next(state_obj)
    expected_prompts = calls[-1]

    generate, calls = _fake_generate(lambda call: replies_of(call + 1))  # the rollout after the restore
    monkeypatch.setattr(rollout_source, "generate", generate)
    restored = _source(_tasks(tmp_path), seed=3)
    restored.set_state(saved)
    rows = restored.next(state_obj)
    assert calls[0] == expected_prompts
    for key, value in expected.items():
        np.testing.assert_array_equal(rows[key], value, err_msg=key)
    timing = "rollout_tokens_per_s"
    assert {k: v for k, v in restored.metrics().items() if k != timing} == {
        k: v for k, v in straight.metrics().items() if k != timing}  # fmt: skip


def test_the_experiments_mixture_is_well_formed():
    config = rl_general.get_config("tiny")
    slots = mixture.parse_tasks(config.batch_source.tasks.to_dict())
    assert {s.name for s in slots} >= {"instruction", "format", "thinkfollow", "qa", "preference", "tool_use"}
    assert sum(s.share for s in slots) == pytest.approx(1.0)
    labels = {spec["name"] for s in slots for spec in s.rewards}
    assert labels >= {"ifeval", "format", "judge", "reward_model", "math"}
    for slot in slots:
        for split in ("train", "eval"):
            records = load_verifiable(slot.prompts, split)
            assert records and all(validate_record(r) for r in records[:20])
    assert [(s.tools, s.max_turns) for s in slots if s.name == "tool_use"] == [(("calculator", "python"), 4)]


def test_bad_tasks_fail_early_naming_the_problem(tmp_path):
    tasks = _tasks(tmp_path)
    with pytest.raises(ValueError, match="mode must be one of"):
        mixture.parse_tasks({"x": dict(tasks["qa"], mode="sometimes")})
    with pytest.raises(ValueError, match=r"task 'x': missing \['share'\]"):
        mixture.parse_tasks({"x": {k: v for k, v in tasks["qa"].items() if k != "share"}})
    clash = {"a": dict(tasks["qa"], rewards=[{"name": "format"}]),
             "b": dict(tasks["qa"], rewards=[{"name": "format", "default_thinking": False}])}  # fmt: skip
    with pytest.raises(ValueError, match="reward label 'format' names two configurations"):
        mixture.build_task_rewards(mixture.parse_tasks(clash))
    with pytest.raises(ValueError, match="need max_turns >= 2"):
        mixture.parse_tasks({"x": dict(tasks["qa"], tools=["calculator"])})
    with pytest.raises(ValueError, match="with tool tasks use 'filter'"):
        _source({"x": dict(tasks["qa"], tools=["calculator"], max_turns=2)}, overlong="soft")


CALL = '<think>\n\n</think>\n\n<tool_call>\n{"name": "calculator", "arguments": {"expression": "2+3"}}\n</tool_call>'


def test_a_tool_task_rolls_out_multi_turn_and_the_others_single_turn(tmp_path, monkeypatch):
    """A tool task's prompts list its tools and its groups are episodes (call, response, final answer), sampled in
    a stream of their own; the other tasks' groups stay single-turn; tool metrics count the tool task's calls."""
    calls = []

    def generate(model, prompts, *, n, seed, **_):
        calls.append((seed, [TOK.decode(p) for p in prompts]))
        texts = [CALL if "<tool_response>" not in TOK.decode(p) and "calculator" in TOK.decode(p) else REPLIES[0]
                 for p in prompts for _ in range(n)]  # fmt: skip
        tokens = [TOK.encode(t) + [STOP] for t in texts]
        zeros = [np.zeros(len(t), np.float32) for t in tokens]
        return GenerationResult(tokens, zeros, zeros, [np.zeros(len(t), bool) for t in tokens], ["stop"] * len(tokens),
                                [len(t) for t in tokens])  # fmt: skip

    monkeypatch.setattr(rollout_source, "generate", generate)
    tasks = _tasks(tmp_path)
    tasks["qa"].update(tools=["calculator"], max_turns=3)
    source = _source(tasks, global_batch=48, seq_len=512)  # the calculator's schema: ~210 prompt tokens
    rows = source.next(types.SimpleNamespace(model=lambda: None))
    single, *tool_turns = calls
    assert not any("calculator" in p for p in single[1])  # the single-turn tasks' prompts list no tool
    assert tool_turns and all("calculator" in p for _, prompts in tool_turns for p in prompts)
    assert single[0] != tool_turns[0][0]  # a sampling stream of its own
    metrics = source.metrics()
    qa_rows = [i for i, ids in enumerate(rows["tokens"]) if "calculator" in TOK.decode(ids)]
    assert metrics["tool/calls"] == len(qa_rows) == 4 * round(12 * metrics["task/qa/groups_frac"]) > 0
    for i in qa_rows:  # the tool's response is in the row, out of the loss and of the sampled tokens
        text = TOK.decode(rows["tokens"][i][rows["segment_ids"][i] > 0])
        assert "<tool_response>\n5\n</tool_response>" in text and text.rstrip().endswith(REPLIES[0] + "<|im_end|>")
        response = [t for t, s in zip(rows["tokens"][i], rows["sampled_mask"][i]) if not s]
        assert "<tool_response>" in TOK.decode(response)
    # The judged reply is the final turn's: the stub judge finds the lantern there.
    assert metrics["task/qa/reward/judge"] == pytest.approx(1.0)


def test_the_held_out_evaluation_scores_each_tasks_replies_with_its_rewards(tmp_path, monkeypatch):
    """`held_out_mixture`: every task's first held-out prompts (switches alternating in "mixed" mode), each reply
    scored by its task's rewards, per task and per reward, as direct calls score them."""
    import qwen3jax.sample

    seen = []

    def greedy(model, prompts, **_):
        seen.extend(prompts)
        tokens = [TOK.encode(REPLIES[i % 4]) + [STOP] for i in range(len(prompts))]
        return GenerationResult(tokens, [], [], [], ["stop"] * len(tokens), [len(t) for t in tokens])

    monkeypatch.setattr(qwen3jax.sample, "generate", greedy)
    source = _source(_tasks(tmp_path))
    eval_config = types.SimpleNamespace(name="held_out_mixture", num_prompts=2, max_new_tokens=8,
                                        get=lambda key, default=None: {"num_prompts": 2, "max_new_tokens": 8}.get(key, default))  # fmt: skip
    trainer = types.SimpleNamespace(config=types.SimpleNamespace(eval=eval_config), source=source)
    metrics, rows = mixture.HeldOutMixture(trainer).score(None)
    # JSONL prompt files have no split: the held-out prompts are each file's first two records.
    expected = [slot.prepare(r, slot.fixed_switch(i)) for slot in source.slots
                for i, r in enumerate(load_verifiable(slot.prompts, "eval")[:2])]  # fmt: skip
    assert [row["prompt"] for row in rows] == [r["messages"] for r in expected]
    assert [r["messages"][-1]["content"].rsplit(" ", 1)[1] for r in expected if r["task"] == "instruction"] == [
        "/think", "/no_think"]  # fmt: skip
    scores = {}
    for i, record in enumerate(expected):
        parts, total = _direct(record)
        for label, values in parts.items():
            scores.setdefault(f"eval/{record['task']}/reward/{label}", []).append(values[i % 4])
        scores.setdefault(f"eval/{record['task']}/reward_mean", []).append(total[i % 4])
        scores.setdefault("eval/reward_mean", []).append(total[i % 4])
    assert set(metrics) == set(scores)
    for key, values in scores.items():
        assert metrics[key] == pytest.approx(np.mean(values)), key

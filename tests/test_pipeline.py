"""`make pipeline` shortened: every stage of the chain for a step or two on a small model, each starting from the
final weights of the stage it builds on, the harness's evaluation of every stage and the table; a rerun trains
nothing again."""

import json
import pathlib

import numpy as np
import orbax.checkpoint as ocp
import pytest

from qwen3jax import pipeline
from qwen3jax.train.loop import Trainer

from .train.helpers import TINY_MODEL

SHORT = {
    **{f"model.{k}": v for k, v in TINY_MODEL.items()}, "model.vocab_size": 8192,  # the chat tokenizer's size
    "steps": 1, "global_batch": 8, "log_every": 1, "eval.every": 0, "samples.num": 0,
    "checkpoint.async_save": False,
}  # fmt: skip
STAGE_OVERRIDES = {
    "pretrain_s1": {"steps": 2, "seq_len": 64},
    "pretrain_s2": {"seq_len": 64},
    "pretrain_s3": {"seq_len": 256, "eval.every": 1, "eval.batches": 1},  # one stage keeps its eval rows
    "rl_reasoning": {"batch_source.max_new_tokens": 6, "loss.max_tokens": 6},
    "reward_model": {"seq_len": 128},
    "rl_general": {"batch_source.max_new_tokens": 6, "loss.max_tokens": 6, "batch_source.dynamic_sampling": False},
}
REPO = pathlib.Path(__file__).resolve().parent.parent
EVAL = pipeline.EvalSettings(tasks=("math_mc", "math"), limit=2, max_new_tokens=6)


def _flat(tree):
    import jax

    leaves = jax.tree_util.tree_leaves_with_path(tree)  # by "stacks/0/layers/..." (a checkpoint's "0" is a string)
    return {jax.tree_util.keystr(p, simple=True, separator="/"): np.asarray(v) for p, v in leaves}


def _final_params(run_dir):
    step_dir = max((run_dir / "checkpoints").iterdir(), key=lambda d: int(d.name))
    with ocp.StandardCheckpointer() as checkpointer:
        return _flat(checkpointer.restore(step_dir / "params"))


@pytest.mark.slow
def test_the_shortened_chain_starts_each_stage_from_the_previous_ones_weights(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(REPO)  # experiments/ as `make pipeline` finds it
    started_from = {}
    init_params = Trainer._init_params

    def keep_starting_weights(self, abstract_params):
        params = init_params(self, abstract_params)
        started_from[self.workdir.name] = _flat(params)
        return params

    monkeypatch.setattr(Trainer, "_init_params", keep_starting_weights)
    root = tmp_path / "pipeline"
    table = pipeline.run_pipeline(root, variant="tiny", overrides=SHORT, stage_overrides=STAGE_OVERRIDES,
                                  eval_settings=EVAL)  # fmt: skip

    stages = {s.name: s for s in pipeline.STAGES}
    assert set(started_from) == {name for name, s in stages.items() if s.init_from}
    for name, weights in started_from.items():
        source = _final_params(root / stages[name].init_from)
        assert weights.keys() == source.keys()
        for key, value in source.items():
            np.testing.assert_array_equal(weights[key], value, err_msg=f"{name} {key}")
    out = capsys.readouterr().out
    assert f"initialised weights from {root / 'rl_reasoning' / 'checkpoints' / '1'}" in out
    for name, source in (("judge", "sft_thinking_fusion"), ("reward_model", "reward_model"), ("teacher", "rl_general")):
        assert f"frozen model {name}: {root / source}\n" in out  # general RL's rewards; the flagship as the teacher
    fusion = json.loads((root / "sft_thinking_fusion" / "config.json").read_text())
    assert fusion["model"]["rope_theta"] == 1e6  # stage 3's RoPE base, not the SFT file's 1e4

    rows = table.strip().splitlines()
    header = [c.strip() for c in rows[0].strip("|").split("|")]
    assert header[:3] == ["stage", "from", "steps"] and {"math_mc", "math think", "math no_think"} <= set(header)
    body = {r.split("|")[1].strip(): [c.strip() for c in r.strip("|").split("|")] for r in rows[2:]}
    assert list(body) == list(stages)
    assert body["pretrain_s1"][2] == "2" and body["sft_cold_start"][1:3] == ["pretrain_s3", "1"]
    assert body["reward_model"][1] == body["rl_general"][1] == "sft_thinking_fusion"
    assert body["pretrain_s3"][4].startswith("loss ") and "→" in body["pretrain_s3"][4]  # eval at steps 0 and 1
    for cells in body.values():
        assert cells[header.index("math_mc")].endswith("/2)") and cells[header.index("math think")].endswith("/2)")
    assert (root / "pipeline.md").read_text() == table

    # Rerun (the last two stages, to save time): found finished, evaluations cached, the same rows.
    last_two = pipeline.STAGES[-2:]
    again = pipeline.run_pipeline(root, variant="tiny", stages=last_two, overrides=SHORT, eval_settings=EVAL)
    assert again.strip().splitlines()[2:] == rows[-2:]
    out = capsys.readouterr().out
    assert out.count("run already complete") == 2 and out.count("(cached)") == 6


def test_a_missing_experiment_or_unknown_stage_fails_before_anything_trains(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    missing = pipeline.Stage("general_rl", "sft_thinking_fusion", ("eval/accuracy",))
    with pytest.raises(pipeline.PipelineError, match=r"stage general_rl: no experiment file experiments/general_rl.py"):
        pipeline.run_pipeline(tmp_path, stages=(*pipeline.STAGES, missing))
    with pytest.raises(pipeline.PipelineError, match=r"overrides for stages not in the pipeline: \['pretrain_s9'\]"):
        pipeline.run_pipeline(tmp_path, stage_overrides={"pretrain_s9": {"steps": 1}})
    assert not any((tmp_path / s.name).exists() for s in pipeline.STAGES)


def test_a_stage_starts_from_its_source_run_with_that_runs_model(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    source = tmp_path / "rl_reasoning"
    source.mkdir()
    s3_model = pipeline.stage_config(pipeline.STAGES[2], tmp_path, "tiny", {})[0].model.to_dict()
    (source / "config.json").write_text(json.dumps({"model": dict(s3_model, num_layers=3)}))
    fusion = pipeline.Stage("sft_thinking_fusion", "rl_reasoning", (), frozen={"teacher": "pretrain_s3"})
    config, chained = pipeline.stage_config(fusion, tmp_path, "tiny", {"steps": 7})
    assert config.init_from == str(source) and config.steps == 7
    assert config.frozen.teacher.path == str(tmp_path / "pretrain_s3")
    assert config.model.rope_theta == 1e6 and config.model.num_layers == 3  # the source's, not the file's 1e4 / 4
    assert chained == {"init_from": str(source), "model.rope_theta": 1e6, "model.num_layers": 3,
                       "frozen.teacher.path": str(tmp_path / "pretrain_s3")}  # fmt: skip
    with pytest.raises(pipeline.PipelineError, match="stage sft_thinking_fusion: override stepz=1"):
        pipeline.stage_config(fusion, tmp_path, "tiny", {"stepz": 1})

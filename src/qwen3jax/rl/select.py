"""Query selection for reasoning RL (TR §4.2): keep the queries the starting model can learn from.

    python -m qwen3jax.rl.select --config=experiments/rl_reasoning.py[:variant] --output=selected.jsonl
        [--config.init_from=...] [--config.batch_source.group_size=16 ...]

samples `batch_source.group_size` completions of every rollout prompt (`batch_source.prompts`, train split) from the
starting model (`init_from`) exactly as the run's rollouts sample them (mode, temperature, top-p, length), scores
them with the run's rewards, and keeps the queries whose pass rate (share of judged completions with the full
reward) is strictly between 0 and 1: a query every sample solves or none does gives GRPO no signal. The kept records
are written with their `pass_rate`; the counts (kept, all failed, all passed, none judged) are printed and written
to `<output>.report.json`. Point the run's `batch_source.prompts` at the output.
"""

from __future__ import annotations

import json
import pathlib
import tempfile
from typing import Any

import numpy as np
from absl import flags

from qwen3jax import experiment_cli

FULL_REWARD = 1.0  # a completion passes with the full reward (as the held-out accuracy counts it)


def learnable(rewards_GN: np.ndarray, judged_GN: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(pass rate [G] (NaN where nothing was judged), {outcome: [G] bool}) with outcomes `kept` (0 < rate < 1),
    `all_failed`, `all_passed` and `unjudged`."""
    judged = np.asarray(judged_GN, bool)
    passed = (np.asarray(rewards_GN) >= FULL_REWARD) & judged
    count = judged.sum(axis=1)
    rate = np.where(count > 0, passed.sum(axis=1) / np.maximum(count, 1), np.nan)
    unjudged = count == 0
    outcomes = {"kept": ~unjudged & (rate > 0) & (rate < 1), "all_failed": ~unjudged & (rate == 0),
                "all_passed": ~unjudged & (rate == 1), "unjudged": unjudged}  # fmt: skip
    return rate, outcomes


def select(source, model, records: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """The learnable records (with `pass_rate`) and the counts of each outcome, sampling `model` through the
    rollout source `source`, `source.prompts_per_step` prompts at a time."""
    kept, counts = [], {"queries": len(records), "kept": 0, "all_failed": 0, "all_passed": 0, "unjudged": 0}
    step = source.prompts_per_step
    for batch_index, start in enumerate(range(0, len(records), step)):
        batch = records[start : start + step]
        rate, outcomes = learnable(*source.sample_and_score(model, batch, batch_index))
        for name, mask in outcomes.items():
            counts[name] += int(mask.sum())
        kept += [{**record, "pass_rate": float(r)} for record, r, keep in zip(batch, rate, outcomes["kept"]) if keep]
    return kept, counts


_CONFIG = experiment_cli.define_experiment_flag()
_OUTPUT = flags.DEFINE_string("output", None, "query–verifier JSONL of the kept queries (must not exist)")


def main(argv) -> None:
    del argv
    import jax  # pylint: disable=import-outside-toplevel
    from flax import nnx  # pylint: disable=import-outside-toplevel

    from qwen3jax.train.frozen import load_model  # pylint: disable=import-outside-toplevel
    from qwen3jax.train.loop import Trainer  # pylint: disable=import-outside-toplevel

    config = _CONFIG.value
    if not _OUTPUT.value:
        experiment_cli.fail("give --output=<file.jsonl> for the kept queries")
    output = pathlib.Path(_OUTPUT.value)
    if output.exists():
        experiment_cli.fail(f"{output} exists; not overwriting it")
    if config.batch_source.name != "rollouts" or not config.init_from:
        experiment_cli.fail("select needs an RL experiment (batch_source.name=rollouts) with init_from, the model "
                            "to select for")  # fmt: skip
    with tempfile.TemporaryDirectory() as scratch:  # the run's set-up (mesh, tokenizer, source), no run directory
        trainer = Trainer(config, scratch)
        _, graphdef, params = load_model(config.init_from, mesh=trainer.mesh, runtime=trainer.model_cfg)
        with jax.set_mesh(trainer.mesh):
            source = trainer.batch_source()
            kept, counts = select(source, nnx.merge(graphdef, params), source.records)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in kept), encoding="utf-8")
    output.with_name(output.name + ".report.json").write_text(json.dumps(counts, indent=2))
    print(json.dumps(counts))
    print(f"kept {counts['kept']} of {counts['queries']} queries -> {output}")


if __name__ == "__main__":
    experiment_cli.run(main, reported=experiment_cli.training_errors)

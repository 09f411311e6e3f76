"""The whole Qwen3 recipe in one command (SPEC §4): `make pipeline` = `python -m qwen3jax.pipeline [--root
runs/pipeline] [--variant tiny|<preset>] [--set steps=5 ...]`.

Every stage is an experiment file run as `make run EXP=<stage>` runs it (`experiment_cli.train`), in its own run
directory `<root>/<stage>`, with `init_from` the run directory of the stage it builds on (`STAGES`). Post-training
stages keep the architecture of the model they start from (stage 3 raised the RoPE base to 1e6; the SFT and RL
experiment files, which also start from stage 1, say 1e4). Rerunning the command resumes: a finished stage is not
trained again (the loop reports "run already complete"), an interrupted one goes on from its newest checkpoint.

Then every stage's final checkpoint is evaluated with the harness (`qwen3jax.eval`, results cached under
`<root>/<stage>/eval`) on built-in tasks, and one Markdown table of per-stage numbers is printed and written to
`<root>/pipeline.md`: steps, wall time, the stage's own learning metric (first -> last eval), its held-out loss,
held-out accuracy in thinking and non-thinking mode, and how the replies use the think block.

General RL's model is the final flagship model that the distillation stages learn from.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import json
import pathlib
import resource
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

EXPERIMENTS = pathlib.Path("experiments")
STATE_FILE = "pipeline_stage.json"  # a finished stage's wall/CPU time, kept for the table of later reruns


@dataclasses.dataclass(frozen=True)
class Stage:
    name: str  # its run directory under the root, and experiments/<name>.py
    init_from: str | None  # the stage whose final weights it starts from; None: fresh weights
    metrics: tuple[str, ...]  # the stage's own learning signal, from its eval rows
    keep_model: bool = True  # take the architecture of `init_from`'s run (post-training never changes it)
    frozen: Mapping[str, str] = dataclasses.field(default_factory=dict)  # frozen model name -> the stage it is

    @property
    def experiment(self) -> pathlib.Path:
        return EXPERIMENTS / f"{self.name}.py"


# The chain, in order. A stage is one row: adding one is one line here.
STAGES = (
    Stage("pretrain_s1", None, ("eval/loss",), keep_model=False),
    Stage("pretrain_s2", "pretrain_s1", ("eval/loss",), keep_model=False),
    Stage("pretrain_s3", "pretrain_s2", ("eval/loss",), keep_model=False),  # its own RoPE base (ABF)
    # Long-CoT cold start; at tiny scale its data is the embedded set that the curation filters made from the
    # worked-solution teacher's responses (data/corpus/cold_start.py); full size reads `python -m
    # qwen3jax.posttrain.curate`'s output (data/cold_start.jsonl).
    Stage("sft_cold_start", "pretrain_s3", ("eval/loss", "eval/accuracy")),
    Stage("rl_reasoning", "sft_cold_start", ("eval/accuracy",)),
    Stage("sft_thinking_fusion", "rl_reasoning", ("eval/loss", "eval/think_nonempty_frac", "eval/no_think_empty_frac")),
    # General RL (SPEC §4 stage 4) scores its preference task with a reward model trained on preference pairs from
    # the fusion model (the chain's model that reads the chat format in both modes), and its QA task with the fusion
    # model as the frozen judge, as rl_general.py's own defaults name them.
    Stage("reward_model", "sft_thinking_fusion", ("eval/pairwise_accuracy",)),
    Stage("rl_general", "sft_thinking_fusion", ("eval/reward_mean",),
          frozen={"judge": "sft_thinking_fusion", "reward_model": "reward_model"}),  # fmt: skip
    # Strong-to-weak: the student starts from the pretrained base (at tiny scale of the same size: a smaller one
    # would need its own S1-S3). Off-policy at tiny scale trains on the embedded distillation set (the
    # worked-solution teacher in both modes; no tiny teacher writes usable responses); full size on
    # data/distill.jsonl, which `python -m qwen3jax.posttrain.curate --teacher <root>/rl_general --modes
    # think,no_think` writes. On-policy then pulls the student towards the flagship (general RL) model on its own
    # samples.
    Stage("distill_off_policy", "pretrain_s3", ("eval/loss", "eval/accuracy")),
    Stage("distill_on_policy", "distill_off_policy", ("eval/kl_heldout", "eval/accuracy"),
          frozen={"teacher": "rl_general"}),  # fmt: skip
)

DEFAULT_TASKS = ("math_mc", "math")  # loglik multiple choice; generation in both modes


class PipelineError(RuntimeError):
    """A stage that cannot run (its experiment file is missing, an override does not apply)."""


def stage_config(stage: Stage, root: pathlib.Path, variant: str, overrides: Mapping[str, Any]):
    """(the stage's experiment config with the pipeline's chaining and the caller's overrides, the fields the
    chaining set)."""
    from qwen3jax import experiment_cli

    base = experiment_cli.load_experiment(stage.experiment, variant)
    chained: dict[str, Any] = {}
    if stage.init_from:
        source = root / stage.init_from
        chained["init_from"] = str(source)
        if stage.keep_model and (source / "config.json").is_file():
            model = json.loads((source / "config.json").read_text())["model"]
            own = json.loads(base.model.to_json_best_effort())  # as config.json holds it (lists, not tuples)
            chained.update({f"model.{k}": v for k, v in model.items() if own.get(k) != v})
    try:
        config = experiment_cli.configure(base, {**chained, **overrides})
    except ValueError as e:
        raise PipelineError(f"stage {stage.name}: {e}") from None
    with config.unlocked():  # a frozen model the experiment file may not name yet (its default config has none)
        for name, source_stage in stage.frozen.items():
            chained[f"frozen.{name}.path"] = str(root / source_stage)
            if name in config.frozen:
                config.frozen[name].path = chained[f"frozen.{name}.path"]
            else:
                config.frozen[name] = {"path": chained[f"frozen.{name}.path"]}
    return config, chained


class _Stopped(Exception):
    """A signal stopped a stage after its checkpoint: the pipeline stops too (rerun to resume)."""


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_stage(stage: Stage, root: pathlib.Path, variant: str, overrides: Mapping[str, Any], *, verbose: bool,
              position: str = "") -> dict:
    """Train one stage (or find it finished); its record: wall and CPU seconds of the invocation that finished it."""
    from qwen3jax import experiment_cli, runlog

    workdir = root / stage.name
    config, chained = stage_config(stage, root, variant, overrides)
    kept = ", ".join(f"{k.removeprefix('model.')}={v}" for k, v in chained.items() if k.startswith("model."))
    runlog.say(f"== pipeline stage {position}{stage.name}: experiments/{stage.name}.py:{config.variant}, "
               f"{config.steps} steps, init_from {config.init_from or '(fresh weights)'}"
               + (f", keeping its model's {kept}" if kept else ""))
    started, cpu = time.perf_counter(), _cpu_seconds()
    trainer = experiment_cli.train(config, workdir, verbose=verbose)
    if trainer.stop_signal:
        raise _Stopped(trainer.stop_signal)
    state_path = workdir / STATE_FILE
    if state_path.is_file():  # finished by an earlier invocation: its times stand
        return json.loads(state_path.read_text())
    record = {"stage": stage.name, "steps": config.steps, "init_from": config.init_from,
              "wall_s": round(time.perf_counter() - started, 1), "cpu_s": round(_cpu_seconds() - cpu, 1),
              "finished": time.strftime("%Y-%m-%d %H:%M:%S %Z")}  # fmt: skip
    state_path.write_text(json.dumps(record, indent=1) + "\n")
    return record


# ------------------------------------------------------------------------------------------------ evaluation
@dataclasses.dataclass(frozen=True)
class EvalSettings:
    tasks: tuple[str, ...] = DEFAULT_TASKS
    limit: int | None = 32  # records per task
    max_new_tokens: int = 160  # per generation sample (thinking included)


def evaluate_stage(workdir: pathlib.Path, settings: EvalSettings) -> dict[str, dict]:
    """The harness's results for the stage's final checkpoint, by "<task> <mode>" (multiple choice: "<task>"),
    cached under `<workdir>/eval` as `make eval` caches them."""
    from qwen3jax import runlog
    from qwen3jax.eval.checkpoints import load_checkpoint
    from qwen3jax.eval.runner import Settings, evaluate
    from qwen3jax.eval.tasks import load_task

    chat, fingerprint = load_checkpoint(workdir)
    results = {}
    for task in map(load_task, settings.tasks):
        for mode in (None,) if task.kind == "multiple_choice" else ("think", "no_think"):
            run = Settings(mode=mode or "think", max_new_tokens=settings.max_new_tokens, limit=settings.limit)
            result = evaluate(chat, fingerprint, task, run, workdir / "eval", checkpoint_path=str(workdir.absolute()))
            name = task.name if mode is None else f"{task.name} {mode}"
            results[name] = result
            runlog.say(f"   eval {workdir.name} {name}: {result['primary']} {_value(result)}"
                       f"{' (cached)' if result['cached'] else ''}")  # fmt: skip
    return results


def _value(result: dict) -> str:
    summary = result["metrics"][result["primary"]]
    if summary["value"] is None:
        return "n/a"
    return f"{summary['value']:.2f} ({round(summary['value'] * summary['records'])}/{summary['records']})"


# ----------------------------------------------------------------------------------------------------- table
def _first_last(rows: Sequence[dict], key: str) -> str:
    values = [r[key] for r in sorted(rows, key=lambda r: r["step"]) if key in r]
    if not values:
        return ""
    short = key.removeprefix("eval/")
    return f"{short} {values[0]:.3g}" if len(values) == 1 else f"{short} {values[0]:.3g} → {values[-1]:.3g}"


def _share(result: dict | None, stat: str) -> str:
    value = (result or {}).get("stats", {}).get(stat)
    return "-" if value is None else f"{value:.2f}"


def results_table(stages: Sequence[Stage], root: pathlib.Path, records: Mapping[str, dict],
                  evals: Mapping[str, Mapping[str, dict]]) -> str:  # fmt: skip
    """One row per stage: Markdown for the README."""
    from qwen3jax.train.metrics import format_duration, read_metrics

    columns = list(dict.fromkeys(name for results in evals.values() for name in results))
    header = ["stage", "from", "steps", "wall (CPU) time", "learning metric (first → last eval)",
              "held-out loss / bpb", *columns, "think mode: think closed", "no-think mode: think reopened"]  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for stage in stages:
        record = records.get(stage.name, {})
        rows = read_metrics(root / stage.name / "metrics.jsonl")
        learned = "; ".join(filter(None, (_first_last(rows, k) for k in stage.metrics))) or "-"
        last_eval = next((r for r in sorted(rows, key=lambda r: -r["step"]) if "eval/bpb" in r), None)
        loss = f"{last_eval['eval/loss']:.3f} / {last_eval['eval/bpb']:.3f}" if last_eval else "-"
        time_cell = f"{format_duration(record['wall_s'])} ({format_duration(record['cpu_s'])})" if record else "-"
        results = evals.get(stage.name, {})
        think = next((r for n, r in results.items() if n.endswith(" think")), None)
        no_think = next((r for n, r in results.items() if n.endswith(" no_think")), None)
        cells = [stage.name, stage.init_from or "-", str(record.get("steps", "-")), time_cell, learned, loss,
                 *(_value(results[c]) if c in results else "-" for c in columns),
                 _share(think, "think_closed"), _share(no_think, "think_reopened")]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------------- run
def run_pipeline(root: str | pathlib.Path = "runs/pipeline", *, variant: str = "", stages: Sequence[Stage] = STAGES,
                 overrides: Mapping[str, Any] = {}, stage_overrides: Mapping[str, Mapping[str, Any]] = {},
                 eval_settings: EvalSettings = EvalSettings(), verbose: bool = False) -> str:  # fmt: skip
    """Train every stage in order (finished ones are found finished), evaluate each with the harness, and return
    the table (also written to `<root>/pipeline.md`). `overrides` apply to every stage, `stage_overrides[name]`
    to one, after the chaining (`init_from`, the kept model fields)."""
    from qwen3jax import runlog

    root = pathlib.Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for stage in stages:  # a missing experiment or a mistyped override fails before anything trains
        if not stage.experiment.is_file():
            raise PipelineError(f"stage {stage.name}: no experiment file {stage.experiment}")
    unknown = set(stage_overrides) - {s.name for s in stages}
    if unknown:
        raise PipelineError(f"overrides for stages not in the pipeline: {sorted(unknown)}")
    records = {}
    for i, stage in enumerate(stages, 1):
        records[stage.name] = run_stage(stage, root, variant, {**overrides, **stage_overrides.get(stage.name, {})},
                                        verbose=verbose, position=f"{i}/{len(stages)} ")  # fmt: skip
    runlog.say("== pipeline: evaluating every stage with the harness")
    evals = {stage.name: evaluate_stage(root / stage.name, eval_settings) for stage in stages}
    table = results_table(stages, root, records, evals)
    (root / "pipeline.md").write_text(table)
    runlog.say(f"== pipeline finished; table in {root / 'pipeline.md'}\n{table}")
    return table


def _override(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    key, value = text.split("=", 1)
    try:
        return key.strip(), ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key.strip(), value  # a plain string


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m qwen3jax.pipeline", description=__doc__.split("\n\n")[0])
    p.add_argument("--root", default="runs/pipeline", help="folder of the stages' run directories")
    p.add_argument("--variant", default="", help="every stage's variant (default: tiny on CPU, the experiments' "
                                                  "full-size default on accelerators), e.g. qwen3_0_6b")  # fmt: skip
    p.add_argument("--set", dest="overrides", action="append", type=_override, default=[], metavar="KEY=VALUE",
                   help="a config override for every stage, e.g. --set steps=5 (repeatable)")
    p.add_argument("--tasks", default=",".join(DEFAULT_TASKS), help="harness tasks for the final evaluation")
    p.add_argument("--eval-limit", type=int, default=EvalSettings.limit, help="records per task")
    p.add_argument("--max-new-tokens", type=int, default=EvalSettings.max_new_tokens)
    p.add_argument("--verbose", action="store_true", help="library logs on the console too")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from qwen3jax import experiment_cli
    from qwen3jax.convert import CheckpointError as ConvertError
    from qwen3jax.eval.tasks import TaskError
    from qwen3jax.sample.cli import UsageError

    settings = EvalSettings(tuple(t for t in args.tasks.split(",") if t), args.eval_limit, args.max_new_tokens)
    try:
        run_pipeline(args.root, variant=args.variant, overrides=dict(args.overrides), eval_settings=settings,
                     verbose=args.verbose)  # fmt: skip
    except _Stopped as e:
        print(f"pipeline stopped by {e}; rerun the same command to resume", file=sys.stderr)
        return 128 + signal.Signals[str(e)].value
    except (PipelineError, UsageError, ConvertError, TaskError, *experiment_cli.training_errors()) as e:
        print(f"error: {e.args[0] if isinstance(e, KeyError) and e.args else e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

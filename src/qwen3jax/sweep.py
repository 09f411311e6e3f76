"""Run an experiment's `sweep()` overrides one after another, each in its own run directory, then print a table of
final metrics: `python -m qwen3jax.sweep --config=experiments/pretrain_s1.py [--workdir=runs/NAME_sweep]`."""

from __future__ import annotations

import pathlib

from absl import flags

from qwen3jax import experiment_cli

_CONFIG = experiment_cli.define_experiment_flag()
_WORKDIR = flags.DEFINE_string("workdir", None, "parent directory of the sweep's runs (default: runs/<name>_sweep)")


def load_sweep(config_path: str):
    module = experiment_cli.load_module(config_path.split(":")[0])
    if not hasattr(module, "sweep") or not module.sweep():
        raise ValueError(f"{config_path.split(':')[0]} defines no sweep() (or it returned no runs)")
    return module.sweep()


def run_name(overrides: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in overrides.items()).replace("/", "_")


def main(argv) -> None:
    del argv
    from qwen3jax.train.loop import RunStopped, Trainer

    base = _CONFIG.value
    sweep = load_sweep(flags.FLAGS["config"].config_filename)
    parent = pathlib.Path(_WORKDIR.value or f"runs/{base.name}_sweep")
    results = []
    for i, overrides in enumerate(sweep):
        results.append((overrides, experiment_cli.configure(base, overrides)))  # all overrides are checked before any run starts
    rows = []
    for i, (overrides, config) in enumerate(results):
        print(f"== sweep run {i + 1}/{len(results)}: {overrides}", flush=True)
        trainer = Trainer(config, parent / run_name(overrides))
        try:
            final = trainer.run()
        except RunStopped as e:  # e.g. a learning rate that diverges: a result of the sweep, not its end
            print(f"run stopped: {e}", flush=True)
            final = {}
        if trainer.stop_signal:
            print("sweep interrupted; rerun the same command to resume", flush=True)
            break
        rows.append((run_name(overrides), final.get("train/loss", float("nan")), final.get("eval/loss", float("nan"))))
    width = max(len(name) for name, _, _ in rows) if rows else 3
    print(f"\n{'run':<{width}}  {'train loss':>10}  {'eval loss':>10}")
    for name, train_loss, eval_loss in sorted(rows, key=lambda r: (r[2] != r[2], r[2])):  # NaN (failed) last
        print(f"{name:<{width}}  {train_loss:>10.4f}  {eval_loss:>10.4f}")


if __name__ == "__main__":
    experiment_cli.run(main, reported=experiment_cli.training_errors)

"""Run an experiment: `python -m qwen3jax.run --config=experiments/pretrain_s1.py[:variant] [--config.x=y ...]
[--workdir=runs/NAME]`. Rerunning the same command resumes from the run directory's latest checkpoint.

Exit status: 0 when the run is complete, 1 on an error, 128 + the signal number (143 SIGTERM, 130 SIGINT) when a
signal stopped it after a checkpoint, as shells and job schedulers expect of a process ended by that signal."""

from __future__ import annotations

import pathlib
import signal
import sys
import time

from absl import app, flags
from ml_collections import config_flags

from qwen3jax import runlog

_CONFIG = config_flags.DEFINE_config_file("config", None, "experiment file[:variant]", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "run directory (default: runs/<experiment name>)")
_VERBOSE = flags.DEFINE_bool("verbose", False, "also show library logs (orbax, absl, grain, jax) on the console; "
                             "they always go to <workdir>/run.log")


def main(argv) -> None:
    del argv
    from qwen3jax.train.loop import RunStopped, Trainer
    from qwen3jax.train.metrics import format_duration, read_metrics, summary_table

    started = time.perf_counter()

    config = _CONFIG.value
    workdir = _WORKDIR.value or f"runs/{config.name}"
    runlog.configure(workdir, verbose=_VERBOSE.value)
    runlog.say(f"experiment {config.name}: variant {config.variant!r} ({config.variant_reason})")
    try:  # configuration problems are reported in one line; errors inside training keep their traceback
        trainer = Trainer(config, workdir)
    except (RunStopped, ValueError, KeyError) as e:
        fail(e)
    try:
        trainer.run()
    except (RunStopped, FileNotFoundError) as e:
        fail(e)
    if trainer.stop_signal:  # checkpointed, not finished: a pipeline must not go on to the next stage
        sys.exit(128 + signal.Signals[trainer.stop_signal].value)
    rows = read_metrics(pathlib.Path(workdir) / "metrics.jsonl")
    runlog.say("\n".join([f"results of {config.name} after {format_duration(time.perf_counter() - started)}:",
                           *summary_table(rows)]))  # fmt: skip
    runlog.say(f"outputs in {workdir}/: metrics.jsonl, curves.png, samples.txt, checkpoints/, tensorboard/, run.log")


def fail(error: BaseException) -> None:
    runlog.say(f"error: {error}", error=True)
    sys.exit(1)


if __name__ == "__main__":
    flags.mark_flag_as_required("config")
    try:
        app.run(main)
    except (KeyError, ValueError) as e:  # raised by the experiment's get_config while flags are parsed
        fail(e)

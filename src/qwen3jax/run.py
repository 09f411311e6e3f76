"""Run an experiment: `python -m qwen3jax.run --config=experiments/pretrain_s1.py[:variant] [--config.x=y ...]
[--workdir=runs/NAME]`. Rerunning the same command resumes from the run directory's latest checkpoint.

Exit status: 0 when the run is complete, 1 on an error (one line on stderr), 128 + the signal number (143 SIGTERM,
130 SIGINT) when a signal stopped it after a checkpoint — or, for Ctrl-C, during set-up — as shells and job
schedulers expect of a process ended by that signal."""

from __future__ import annotations

import signal
import sys

from absl import flags

from qwen3jax import experiment_cli

_CONFIG = experiment_cli.define_experiment_flag()
_WORKDIR = flags.DEFINE_string("workdir", None, "run directory (default: runs/<experiment name>)")
_VERBOSE = flags.DEFINE_bool("verbose", False, "also show library logs (orbax, absl, grain, jax) on the console; "
                             "they always go to <workdir>/run.log")


def main(argv) -> None:
    del argv
    config = _CONFIG.value
    trainer = experiment_cli.train(config, _WORKDIR.value or f"runs/{config.name}", verbose=_VERBOSE.value)
    if trainer.stop_signal:  # checkpointed, not finished: a pipeline must not go on to the next stage
        sys.exit(128 + signal.Signals[trainer.stop_signal].value)


if __name__ == "__main__":
    experiment_cli.run(main, reported=experiment_cli.training_errors)

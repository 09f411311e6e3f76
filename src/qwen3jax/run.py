"""Run an experiment: `python -m qwen3jax.run --config=experiments/pretrain_s1.py[:variant] [--config.x=y ...]
[--workdir=runs/NAME]`. Rerunning the same command resumes from the run directory's latest checkpoint.

Several processes (hosts) make one run: on a TPU slice each VM runs the same command and JAX finds the others;
elsewhere give each process `--coordinator_address=HOST:PORT` (process 0's), `--num_processes=N` and its
`--process_id` (parallel/distributed.py). A run may be resumed on another number of processes.

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
_COORDINATOR = flags.DEFINE_string("coordinator_address", "", "multi-process runs: host:port of process 0 "
                                   "(not needed on TPU VMs, where JAX finds the slice's processes)")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", 0, "multi-process runs: how many processes make the run")
_PROCESS_ID = flags.DEFINE_integer("process_id", -1, "multi-process runs: this process's index, 0 .. num_processes-1")
_VERBOSE = flags.DEFINE_bool("verbose", False, "also show library logs (orbax, absl, grain, jax) on the console; "
                             "they always go to <workdir>/run.log")


def main(argv) -> None:
    del argv
    from qwen3jax.parallel import distributed

    distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)  # before any device is used
    config = _CONFIG.value
    trainer = experiment_cli.train(config, _WORKDIR.value or f"runs/{config.name}", verbose=_VERBOSE.value)
    if trainer.stop_signal:  # checkpointed, not finished: a pipeline must not go on to the next stage
        sys.exit(128 + signal.Signals[trainer.stop_signal].value)


if __name__ == "__main__":
    experiment_cli.run(main, reported=experiment_cli.training_errors)

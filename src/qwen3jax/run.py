"""Run an experiment: `python -m qwen3jax.run --config=experiments/pretrain_s1.py[:variant] [--config.x=y ...]
[--workdir=runs/NAME]`. Rerunning the same command resumes from the run directory's latest checkpoint.

Several processes (hosts) make one run: on a TPU slice each VM runs the same command and JAX finds the others;
elsewhere give each process `--coordinator_address=HOST:PORT` (process 0's), `--num_processes=N` and its
`--process_id` (parallel/distributed.py). A run may be resumed on another number of processes.

Exit status: 0 when the run is complete, 1 on an error (one line on stderr), 128 + the signal number (143 SIGTERM,
130 SIGINT) when a signal stopped it after a checkpoint — or, for Ctrl-C, during set-up — as shells and job
schedulers expect of a process ended by that signal."""

from __future__ import annotations

import pathlib
import signal
import sys
import time

from absl import flags

from qwen3jax import experiment_cli, runlog

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
    from qwen3jax.train.loop import Trainer
    from qwen3jax.train.metrics import format_duration, read_metrics, summary_table

    started = time.perf_counter()
    config = _CONFIG.value
    workdir = _WORKDIR.value or f"runs/{config.name}"
    runlog.configure(workdir, verbose=_VERBOSE.value)
    runlog.say(f"experiment {config.name}: variant {config.variant!r} ({config.variant_reason})")
    trainer = Trainer(config, workdir)  # errors a user can fix end in one line (experiment_cli.run)
    trainer.run()
    if trainer.stop_signal:  # checkpointed, not finished: a pipeline must not go on to the next stage
        sys.exit(128 + signal.Signals[trainer.stop_signal].value)
    if not trainer.primary:  # process 0 writes the metrics and says the results
        return
    rows = read_metrics(pathlib.Path(workdir) / "metrics.jsonl")
    runlog.say("\n".join([f"results of {config.name} after {format_duration(time.perf_counter() - started)}:",
                           *summary_table(rows)]))  # fmt: skip
    runlog.say(f"outputs in {workdir}/: metrics.jsonl, curves.png, samples.txt, checkpoints/, tensorboard/, run.log")


if __name__ == "__main__":
    experiment_cli.run(main, reported=experiment_cli.training_errors)

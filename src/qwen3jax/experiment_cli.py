"""Command-line plumbing shared by `qwen3jax.run`, `qwen3jax.sweep` and `qwen3jax.pipeline`: the experiment flag,
experiment files loaded and overridden from Python, one run of an experiment (`train`), and one-line errors for what
goes wrong before or while a run works — a mistyped `--config.` key, an experiment file that does not exist, a bad
run directory, a checkpoint that cannot be written, Ctrl-C during set-up. Tracebacks stay for bugs."""

from __future__ import annotations

import copy
import importlib.util
import pathlib
import sys
import time
from collections.abc import Callable
from typing import NoReturn

from absl import app, flags
from ml_collections import config_flags

from qwen3jax import interrupt

EXPERIMENTS = pathlib.Path("experiments")  # where `make run EXP=NAME` looks


def define_experiment_flag():
    return config_flags.DEFINE_config_file("config", None, "experiment file[:variant]", lock_config=True)


def load_module(path: str | pathlib.Path):
    """An experiment file as a module (its `get_config`, and `sweep` if it has one)."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(_missing_experiment_message([f"--config={path}"]) or f"no experiment file {path}")
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_experiment(path: str | pathlib.Path, variant: str = ""):
    """`get_config(variant)` of an experiment file, locked as `--config=path:variant` gives it."""
    config = load_module(path).get_config(variant)
    config.lock()
    return config


def apply_overrides(config, overrides: dict) -> None:
    """Dotted keys into the locked config; a mistyped key is reported with the ConfigDict's 'Did you mean'."""
    for key, value in overrides.items():
        *parents, last = key.split(".")
        target = config
        try:
            for part in parents:
                target = getattr(target, part)
            setattr(target, last, value)
        except (AttributeError, TypeError) as e:
            raise ValueError(f"override {key}={value!r}: {e}") from None


def configure(base, overrides: dict):
    """`base` with `overrides` applied, then its references resolved: a field derived from another (S2's
    `optim.decay_steps` from `steps`) follows an override of the field it is derived from, as on the command line."""
    config = copy.deepcopy(base)  # keeps the references; `base` itself stays untouched
    apply_overrides(config, overrides)
    return config.copy_and_resolve_references()


def train(config, workdir: str | pathlib.Path, *, verbose: bool = False):
    """One run of an experiment config, as `python -m qwen3jax.run` does it: the log lines (console and
    `<workdir>/run.log`), the run (resumed from the run directory's newest checkpoint, if any) and its results
    summary. Returns the Trainer: `stop_signal` says whether a signal stopped the run before its end."""
    from qwen3jax import runlog
    from qwen3jax.train.loop import Trainer
    from qwen3jax.train.metrics import format_duration, read_metrics, summary_table

    started = time.perf_counter()
    runlog.configure(workdir, verbose=verbose)
    runlog.say(f"experiment {config.name}: variant {config.variant!r} ({config.variant_reason})")
    trainer = Trainer(config, workdir)
    trainer.run()
    if trainer.stop_signal or not trainer.primary:  # process 0 writes the metrics and says the results
        return trainer
    rows = read_metrics(pathlib.Path(workdir) / "metrics.jsonl")
    runlog.say("\n".join([f"results of {config.name} after {format_duration(time.perf_counter() - started)}:",
                           *summary_table(rows)]))  # fmt: skip
    runlog.say(f"outputs in {workdir}/: metrics.jsonl, curves.png, samples.txt, checkpoints/, tensorboard/, run.log")
    return trainer


def fail(message: object, status: int = 1) -> NoReturn:
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(status)


def run(main: Callable, *, reported: Callable[[], tuple[type[BaseException], ...]]) -> None:
    """`app.run(main)`, with flag errors and the exceptions `reported()` names (from set-up as from the run) in one
    line, and Ctrl-C outside the loop's own handler (which checkpoints first) as exit status 130. `reported` is
    called only when an exception arrives, so its imports (JAX) do not slow down a flag error."""
    flags.mark_flag_as_required("config")
    interrupt.catch_during_set_up()
    try:
        app.run(main, flags_parser=_parse_flags)
    except KeyboardInterrupt:
        fail("interrupted by Ctrl-C (SIGINT); rerun the same command to resume from the newest checkpoint, if any", 130)
    except reported() as e:
        fail(e.args[0] if isinstance(e, KeyError) and e.args else e)  # str(KeyError) would quote the message


def training_errors() -> tuple[type[BaseException], ...]:
    """What a user can cause and fix (configuration, paths, disk, checkpoints): one line, set-up and run alike."""
    from qwen3jax.train.checkpoint import CheckpointError
    from qwen3jax.train.loop import RunStopped

    return RunStopped, CheckpointError, ValueError, KeyError, OSError


def _parse_flags(argv: list[str]) -> list[str]:
    try:
        rest = flags.FLAGS(argv)
    except flags.Error as e:  # a value of the wrong type, an unknown flag, a ValueError in the experiment's get_config
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        fail(f"{lines[0]} {lines[-1]}" if "Error whilst parsing config file" in str(e) else " ".join(lines))
    except (AttributeError, KeyError) as e:  # an override naming a field the config lacks, or get_config's own
        fail(_unknown_key_message(e, argv) or (e.args[0] if e.args else e))
    except OSError as e:  # an override given for an experiment file that failed to load
        fail(_missing_experiment_message(argv) or e)
    config = flags.FLAGS["config"].value
    if type(config).__name__ == "_ErrorConfig":  # ml_collections defers a load failure to the first access
        fail(_missing_experiment_message(argv) or str(config._error).replace("\n", " "))
    return rest


def _unknown_key_message(error: BaseException, argv: list[str]) -> str | None:
    """e.g. `unknown config key 'peak_lrr' in --config.optim.peak_lrr=1: did you mean "peak_lr"?`; None when the
    error does not name a key of a `--config.` override."""
    lines = str(error.args[0] if error.args else error).strip("'\"").replace("\\n", "\n").replace("\\'", "'")
    key, *hints = [line.strip().strip("'") for line in lines.splitlines() if line.strip()] or [""]
    given = next((a for a in argv if a.startswith("--config.") and key in a.split("=")[0].split(".")), None)
    if given is None:
        return None
    hint = "".join(f": {h[0].lower()}{h[1:].split(' instead of')[0]}?" for h in hints[:1])
    return f"unknown config key {key!r} in {given}{hint}"


def _missing_experiment_message(argv: list[str]) -> str | None:
    """For an experiment file that does not exist: which experiments do."""
    path = _flag_value(argv, "config")
    if path is None or pathlib.Path(path.split(":")[0]).is_file():
        return None
    given = pathlib.Path(path.split(":")[0])
    folder = given.parent if given.parent.is_dir() and given.parent != pathlib.Path() else EXPERIMENTS
    names = sorted(p.stem for p in folder.glob("*.py") if not p.name.startswith("_"))
    return (f"no experiment file {given}; the experiments in {folder} are {', '.join(names) or '(none)'} "
            f"(make run EXP=NAME, or --config=experiments/NAME.py)")  # fmt: skip


def _flag_value(argv: list[str], name: str) -> str | None:
    value = None  # the last one given wins, as for absl
    for i, arg in enumerate(argv):
        if arg.startswith(f"--{name}="):
            value = arg.split("=", 1)[1]
        elif arg == f"--{name}" and i + 1 < len(argv):
            value = argv[i + 1]
    return value

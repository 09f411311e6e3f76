"""Run an experiment: `python -m qwen3jax.run --config=experiments/pretrain_s1.py[:variant] [--config.x=y ...]
[--workdir=runs/NAME]`. Rerunning the same command resumes from the run directory's latest checkpoint."""

from __future__ import annotations

import sys

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "experiment file[:variant]", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "run directory (default: runs/<experiment name>)")


def main(argv) -> None:
    del argv
    from qwen3jax.train.loop import RunStopped, Trainer

    config = _CONFIG.value
    print(f"experiment {config.name}: variant {config.variant!r} ({config.variant_reason})", flush=True)
    try:
        Trainer(config, _WORKDIR.value or f"runs/{config.name}").run()
    except (RunStopped, FileNotFoundError, ValueError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    flags.mark_flag_as_required("config")
    app.run(main)

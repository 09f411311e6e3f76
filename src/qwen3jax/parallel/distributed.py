"""Multi-process runs: joining the processes of a run (`jax.distributed`) and the decisions they must take together.

Every process of a run executes the same program on its own devices; the collectives of a step wait for all of
them. So whatever a process decides on its own — stop now, skip an unreadable checkpoint, one more eval batch —
must be agreed on by all (`any_process`, `all_processes`), or one process waits forever for the others.
"""

from __future__ import annotations

import jax
import numpy as np

from qwen3jax.platform import on_tpu_vm


def initialize(coordinator_address: str = "", num_processes: int = 0, process_id: int = -1) -> None:
    """Join the run's processes before anything touches a device.

    - `coordinator_address` given (host:port of process 0): `num_processes` and `process_id` are required, e.g. for
      several processes on one machine (CPU devices: collectives over gloo) or hosts without auto-detection.
    - otherwise, on a TPU VM (a TPU device file) or a GKE TPU pod (`TPU_WORKER_HOSTNAMES`): JAX finds the slice's
      processes itself (one per VM; a single-host slice is one).
    - otherwise: a single-process run, nothing to do.
    """
    if coordinator_address:
        if num_processes < 1 or not 0 <= process_id < num_processes:
            raise ValueError(f"--coordinator_address needs --num_processes >= 1 and 0 <= --process_id < "
                             f"--num_processes; got num_processes={num_processes}, process_id={process_id}")  # fmt: skip
        # CPU devices of several processes exchange collectives over gloo (the default implementation has none).
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        try:
            jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                                       process_id=process_id)  # fmt: skip
        except RuntimeError as e:
            if "must be called before" not in str(e):
                raise
            # An experiment given no variant asks the backend which one to run, which starts JAX on one process.
            raise ValueError("a multi-process run needs the experiment's variant named (--config=experiments/"
                             "<exp>.py:<variant>): choosing one by the backend starts JAX too early") from None
    elif num_processes > 1 or process_id >= 0:
        raise ValueError("--num_processes/--process_id need --coordinator_address (host:port of process 0)")
    elif on_tpu_vm():
        jax.distributed.initialize()


def any_process(flag: bool) -> bool:
    """Whether `flag` holds on at least one process (every process gets the same answer)."""
    if jax.process_count() == 1:
        return bool(flag)
    from jax.experimental import multihost_utils

    return bool(multihost_utils.process_allgather(np.array(bool(flag))).any())


def all_processes(flag: bool) -> bool:
    """Whether `flag` holds on every process (every process gets the same answer)."""
    return not any_process(not flag)


def barrier(name: str) -> None:
    """Wait until every process arrives here (e.g. after process 0 changed files the others read next)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)

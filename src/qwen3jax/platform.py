"""Which accelerator this machine has, judged before JAX starts a backend (nothing here imports JAX)."""

from __future__ import annotations

import glob
import importlib.util
import os


def on_tpu_vm() -> bool:
    """Whether this machine is a TPU VM (or a GKE pod with TPU chips)."""
    return bool(os.environ.get("TPU_WORKER_HOSTNAMES") or glob.glob("/dev/accel[0-9]*") or glob.glob("/dev/vfio/[0-9]*"))


def skip_absent_tpu() -> None:
    """Keep JAX from starting a TPU backend on a machine without TPU chips.

    libtpu comes with the test extras (it compiles train steps for TPU slices anywhere, `qwen3jax.aot`). With it
    installed and no chip attached, JAX still tries the TPU backend first, which fails and prints libtpu's warnings
    about TPU hostnames it cannot determine before every command's own output. A user's JAX_PLATFORMS, a TPU VM and
    a machine with a GPU plugin (those live in `jax_plugins`) are left alone."""
    if os.environ.get("JAX_PLATFORMS") or on_tpu_vm():
        return
    if importlib.util.find_spec("libtpu") is None or importlib.util.find_spec("jax_plugins") is not None:
        return
    os.environ["JAX_PLATFORMS"] = "cpu"

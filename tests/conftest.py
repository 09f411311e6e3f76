"""Test-wide set-up: 8 simulated CPU devices for mesh tests, a persistent compilation cache for speed, and a
`small_disk` fixture (a tmpfs to fill up) for full-disk tests.

This must run before anything imports jax, which is why it lives at the top of the tests tree.
"""

import os
import pathlib
import subprocess

# The suite compiles far more than it runs (hundreds of small programs, most run a few steps), so LLVM's backend
# optimisation is skipped: measured on CPU time, compile-bound test files take ~40% less, training-bound learning
# checks ~35% more, the suite less overall. Numerics are unchanged (no fast-math at any level). Subprocesses that
# tests start inherit it.
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8 --xla_backend_optimization_level=0"
)
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update(
    "jax_compilation_cache_dir", os.path.join(os.path.dirname(__file__), "..", ".cache", "jax_compilation")
)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


@pytest.fixture
def small_disk(tmp_path):
    """A tmpfs mount point of a given size (root only); unmounted after the test."""
    mounts = []

    def mount(size_bytes: int) -> pathlib.Path:
        point = tmp_path / f"disk{len(mounts)}"
        point.mkdir()
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_bytes}", "tmpfs", str(point)],
                                capture_output=True, text=True)  # fmt: skip
        if result.returncode:
            pytest.skip(f"cannot mount a tmpfs to fill up (needs root): {result.stderr.strip()}")
        mounts.append(point)
        return point

    yield mount
    for point in mounts:
        subprocess.run(["umount", "-l", str(point)], check=False)


@pytest.fixture(scope="session")
def pretrained_tiny(tmp_path_factory) -> str:
    """The run directory of the tiny pretrained model the post-training learning checks start from (see
    tests/pretrained.py), trained once per test run however many workers ask for it."""
    from tests.pretrained import shared_pretrained_run  # pylint: disable=import-outside-toplevel

    return shared_pretrained_run(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="session")
def zero_products(tmp_path_factory):
    """The zero-products prompt files and the random-digit SFT start (`sft/`), built once per session: reasoning RL
    and on-policy distillation both start from it (tests/zero_products.py)."""
    from tests.zero_products import random_digits, sft_run  # pylint: disable=import-outside-toplevel

    root = tmp_path_factory.mktemp("zero_products")
    sft_run(root, "sft", random_digits)
    return root

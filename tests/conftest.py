"""Test-wide set-up: 8 simulated CPU devices for mesh tests and a persistent compilation cache for speed.

This must run before anything imports jax, which is why it lives at the top of the tests tree.
"""

import os

os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

jax.config.update(
    "jax_compilation_cache_dir", os.path.join(os.path.dirname(__file__), "..", ".cache", "jax_compilation")
)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)

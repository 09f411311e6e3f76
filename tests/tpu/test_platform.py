"""On a machine without TPU chips, importing qwen3jax keeps JAX off the TPU backend that the test extras' libtpu
would otherwise start (and whose failure prints libtpu's warnings before every command's output)."""

import importlib.util
import os
import subprocess
import sys

import pytest

from qwen3jax import platform

needs_libtpu = pytest.mark.skipif(importlib.util.find_spec("libtpu") is None, reason="libtpu not installed")


@needs_libtpu
def test_a_cpu_machine_starts_only_the_cpu_backend_and_prints_nothing():
    env = {k: v for k, v in os.environ.items() if k not in ("JAX_PLATFORMS", "TPU_WORKER_HOSTNAMES")}
    code = "import qwen3jax, os, jax; print(os.environ['JAX_PLATFORMS'], jax.default_backend())"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.split() == ["cpu", "cpu"]
    assert "TPU" not in done.stderr, done.stderr


@needs_libtpu
@pytest.mark.parametrize(
    "env, expected",
    [
        ({"JAX_PLATFORMS": "cuda,cpu"}, "cuda,cpu"),  # the user's choice
        ({"TPU_WORKER_HOSTNAMES": "10.0.0.2,10.0.0.3"}, None),  # a TPU pod: JAX must find its chips
        ({}, "cpu"),
    ],
)
def test_only_an_unset_platform_on_a_machine_without_tpu_is_decided(monkeypatch, env, expected):
    monkeypatch.delenv("JAX_PLATFORMS", raising=False)
    monkeypatch.delenv("TPU_WORKER_HOSTNAMES", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    platform.skip_absent_tpu()
    assert os.environ.get("JAX_PLATFORMS") == expected

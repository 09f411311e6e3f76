"""Loading straight onto a device mesh: every shard (read as a slice of the safetensors data) equals the unsharded
parameter, and lands on the sharding `state_shardings` asks for; native checkpoints restore the same way.

Runs in a child process with 8 simulated CPU devices (the device count is fixed when jax starts).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from safetensors.torch import save_file

from qwen3jax.convert import load_hf
from qwen3jax.convert.hf import _read_shard, _TensorFiles
from qwen3jax.convert.layout import hf_layout

from .hf_models import flat_params, random_hf_model

CHILD = textwrap.dedent(
    """
    import sys
    import jax
    import numpy as np
    from flax import nnx, traverse_util
    from qwen3jax.convert import load_hf, load_native, save_native
    from qwen3jax.parallel import make_mesh, state_shardings

    assert jax.device_count() == 8, jax.devices()

    def params(model):
        return traverse_util.flatten_dict(nnx.to_pure_dict(nnx.state(model, nnx.Param)))

    def check(model, reference, mesh):
        want = traverse_util.flatten_dict(nnx.to_pure_dict(state_shardings(nnx.state(model, nnx.Param), mesh)))
        split = 0
        for path, array in params(model).items():
            assert array.sharding.is_equivalent_to(want[path], array.ndim), (path, array.sharding, want[path])
            np.testing.assert_array_equal(np.asarray(array), reference[path], err_msg=str(path))
            split += not array.sharding.is_fully_replicated
        return split

    for hf_dir in sys.argv[2:]:
        _, plain = load_hf(hf_dir)
        reference = {p: np.asarray(a) for p, a in params(plain).items()}
        for spec in [{"fsdp": 2, "tensor": 4}, {"data": 2, "expert": 4}, {"fsdp": 2, "expert": 2, "tensor": 2}]:
            mesh = make_mesh(spec)
            _, model = load_hf(hf_dir, mesh=mesh)
            assert check(model, reference, mesh) > 0, spec  # some weights really are split
    # Native checkpoints restore onto the mesh too (the last model and mesh suffice).
    save_native(model, sys.argv[1])
    check(load_native(sys.argv[1], mesh=mesh)[1], reference, mesh)
    print("OK")
    """
)


@pytest.fixture
def checkpoints(tmp_path):
    """The same MoE model (dense and sparse layers) stored with per-expert and with fused expert tensors."""
    hf = random_hf_model("moe", decoder_sparse_step=2, num_hidden_layers=3)
    hf.save_pretrained(tmp_path / "per_expert")
    (tmp_path / "fused").mkdir()  # the fused layout exercises row offsets inside sliced reads
    shutil.copy(tmp_path / "per_expert" / "config.json", tmp_path / "fused")
    save_file({k: v.contiguous() for k, v in hf.state_dict().items()}, tmp_path / "fused" / "model.safetensors",
              metadata={"format": "pt"})
    return tmp_path / "per_expert", tmp_path / "fused"


@pytest.mark.parametrize("layout", ["per_expert", "fused"])
def test_any_slice_reads_like_the_full_parameter(checkpoints, layout):
    """Shards may cut any axis (the default rules never split head_dim, but other rules may): a partial read of
    every parameter over random sub-ranges of all its axes equals the same slice of the fully loaded parameter."""
    path = checkpoints[layout == "fused"]
    cfg, model = load_hf(path)
    full = flat_params(model)
    rng = np.random.default_rng(0)
    with _TensorFiles(path) as files:
        fused = {1} if layout == "fused" else set()
        for leaf in hf_layout(cfg, fused).leaves:
            for _ in range(4):
                bounds = [sorted(rng.choice(n + 1, 2, replace=False)) for n in leaf.shape]
                ranges = tuple(range(a, b) for a, b in bounds)
                got = _read_shard(files, leaf, ranges, np.dtype(np.float32))
                want = full[leaf.path][tuple(slice(a, b) for a, b in bounds)]
                np.testing.assert_array_equal(got, want, err_msg=f"{leaf.path} {bounds}")


def test_load_onto_mesh(tmp_path, checkpoints):
    flags = "--xla_force_host_platform_device_count=8 --xla_backend_optimization_level=0"  # as tests/conftest.py
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=flags)
    run = subprocess.run(
        [sys.executable, "-c", CHILD, str(tmp_path / "native"), *map(str, checkpoints)],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert run.returncode == 0 and run.stdout.strip().endswith("OK"), run.stderr[-3000:]

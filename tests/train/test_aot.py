"""AOT compile check: the S1 train step of real presets lowers and compiles on a simulated 8-device mesh with the
real shapes (jax cannot target an abstract TPU topology without libtpu), without allocating any weights."""

import pytest

from experiments import pretrain_s1
from qwen3jax.train.aot import compile_train_step
from qwen3jax.train.loop import Trainer


@pytest.mark.slow
@pytest.mark.parametrize(
    "preset,mesh",
    [("qwen3_0_6b", {"data": 1, "fsdp": 4, "tensor": 2}), ("qwen3_30b_a3b", {"data": 1, "fsdp": 2, "expert": 4})],
)
def test_real_preset_train_step_compiles(tmp_path, preset, mesh):
    config = pretrain_s1.get_config(preset)
    config.mesh.update(mesh)
    config.global_batch, config.micro_batches = 16, 2  # real sequence length and model; a small slice of the batch
    if preset == "qwen3_30b_a3b":
        config.model.num_layers = 4  # same layer shapes; depth is scanned, so it does not change what compiles
    trainer = Trainer(config, tmp_path)
    compiled = compile_train_step(trainer)
    memory = compiled.memory_analysis()
    params = trainer.model_cfg.param_counts()["total"]
    # Weights and both Adam moments (fp32) are sharded over the 8 devices: each holds ~1/8, never a replica.
    weights_and_moments_per_device = 3 * 4 * params / 8
    assert memory.argument_size_in_bytes < 1.3 * weights_and_moments_per_device + 4 * 16 * config.seq_len * 4

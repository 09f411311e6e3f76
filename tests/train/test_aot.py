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


@pytest.mark.parametrize("devices,micro_batches", [(8, 8), (1, 64)])
def test_full_size_s3_fits_any_mesh_with_one_long_sequence_per_device_and_micro_batch(tmp_path, devices, micro_batches):
    """`micro_batches=0` resolves against the mesh: 64 sequences of 32K tokens on 8 devices are 8 micro-batches."""
    import jax

    from experiments import pretrain_s3

    config = pretrain_s3.get_config("qwen3_0_6b")
    assert config.mesh.context == 8  # each 32K sequence split over 8 devices; the rest are batch shards
    config.mesh.context = 1
    trainer = Trainer(config, tmp_path, devices=jax.devices()[:devices])
    assert trainer.micro_batches == micro_batches and config.micro_batches == 0
    config = pretrain_s3.get_config("qwen3_0_6b")
    if devices == 8:  # the default context=8 leaves one batch shard on 8 devices: one sequence per micro-batch
        assert Trainer(config, tmp_path / "cp", devices=jax.devices()[:8]).micro_batches == 64
    config.mesh.context = 1
    config.micro_batches = 16  # 4 sequences per micro-batch cannot be split over 8 batch shards
    with pytest.raises(ValueError, match="micro_batches=0 picks the most that fit"):
        Trainer(config, tmp_path / "other", devices=jax.devices()[:8])

"""The shared train step: micro-batching is exact, sharding does not change the trajectory, the global-batch
balance loss equals its whole-batch formula, non-finite updates are skipped."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qwen3jax.model import load_balance_loss
from qwen3jax.train.loop import Trainer

from .helpers import tiny_config


def _batches(cfg, n, seed=0):
    """Rows of two documents and some padding, like packed data."""
    rng = np.random.default_rng(seed)
    b, t = cfg.global_batch, cfg.seq_len
    out = []
    for _ in range(n):
        tokens = rng.integers(1, cfg.model.vocab_size, (b, t))
        cut, end = rng.integers(4, t // 2, b), rng.integers(t - 6, t + 1, b)
        idx = np.arange(t)[None]
        segments = np.where(idx < cut[:, None], 1, 2) * (idx < end[:, None])
        positions = np.where(idx < cut[:, None], idx, idx - cut[:, None]) * (segments > 0)
        out.append({"tokens": tokens * (segments > 0), "segment_ids": segments, "positions": positions,
                    "loss_mask": (segments > 0).astype(np.int32)})  # fmt: skip
    return out


def _trainer(tmp_path, mesh, **overrides):
    config = tiny_config(**overrides)
    config.mesh.update({"data": 1, **mesh})
    return Trainer(config, tmp_path / "run", devices=jax.devices()[: int(np.prod(list(mesh.values())))])


def _trajectory(trainer, batches):
    state = trainer.init_state()
    step = trainer.step_function(jax.tree.map(lambda x: x.sharding, state))
    history = []
    with jax.set_mesh(trainer.mesh):
        for batch in batches:
            state, metrics = step(state, trainer.to_global(batch))
            history.append(jax.device_get(metrics))
    return state, history


@pytest.mark.parametrize("moe", [False, True], ids=["dense", "moe"])
def test_micro_batches_equal_one_batch(tmp_path, moe):
    batches = _batches(tiny_config(moe=moe), 2)
    ref_state, ref = _trajectory(_trainer(tmp_path / "a", {"data": 1}, moe=moe), batches)
    state, got = _trajectory(_trainer(tmp_path / "b", {"data": 1}, moe=moe, micro_batches=4), batches)
    for r, g in zip(ref, got):
        for key in ("loss", "ce", "balance_loss", "grad_norm") if moe else ("loss", "ce", "grad_norm"):
            np.testing.assert_allclose(g[key], r[key], rtol=2e-5, err_msg=key)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), state.params, ref_state.params)


MESHES = [
    ({"fsdp": 4, "tensor": 2}, False),
    ({"data": 2, "expert": 4}, True),
    ({"fsdp": 2, "expert": 2, "tensor": 2}, True),
]


@pytest.mark.parametrize("mesh,moe", MESHES, ids=["fsdp4_tensor2-dense", "data2_expert4-moe", "fsdp2_expert2_tensor2-moe"])
def test_sharded_trajectory_matches_single_device(tmp_path, mesh, moe):
    batches = _batches(tiny_config(moe=moe), 3)
    _, ref = _trajectory(_trainer(tmp_path / "one", {"data": 1}, moe=moe), batches)
    _, got = _trajectory(_trainer(tmp_path / "mesh", mesh, moe=moe), batches)
    np.testing.assert_allclose([g["loss"] for g in got], [r["loss"] for r in ref], rtol=2e-5)
    np.testing.assert_allclose([g["grad_norm"] for g in got], [r["grad_norm"] for r in ref], rtol=1e-4)


@pytest.mark.parametrize("micro_batches", [1, 2, 4])
def test_global_balance_loss_is_the_whole_batch_formula(tmp_path, micro_batches):
    trainer = _trainer(tmp_path, {"data": 2, "expert": 4}, moe=True, micro_batches=micro_batches, global_batch=32)
    batch = _batches(trainer.config, 1)[0]
    state = trainer.init_state()
    with jax.set_mesh(trainer.mesh):
        _, stats = jax.jit(lambda p, b: state.model(p)(b["tokens"], b["positions"], b["segment_ids"], return_stats=True))(
            state.params, trainer.to_global(batch)
        )
        expected = trainer.config.loss.balance_coef * load_balance_loss(stats)
        _, metrics = trainer.step_function(jax.tree.map(lambda x: x.sharding, state))(state, trainer.to_global(batch))
    np.testing.assert_allclose(metrics["balance_loss"], expected, rtol=1e-5)


def test_micro_scope_differs_from_global_scope(tmp_path):
    """The HF per-micro-batch variant is a different quantity: the global test above can fail."""
    batch = _batches(tiny_config(moe=True), 1)
    _, global_ = _trajectory(_trainer(tmp_path / "g", {"data": 1}, moe=True, micro_batches=4), batch)
    _, micro = _trajectory(
        _trainer(tmp_path / "m", {"data": 1}, moe=True, micro_batches=4, **{"loss.balance_scope": "micro"}), batch
    )
    assert abs(float(global_[0]["balance_loss"]) - float(micro[0]["balance_loss"])) > 1e-6


def test_nonfinite_update_is_skipped(tmp_path):
    trainer = _trainer(tmp_path, {"data": 1})
    state = trainer.init_state()
    state = state.replace(params={**state.params, "norm": {"weight": state.params["norm"]["weight"].at[0].set(jnp.nan)}})
    before = jax.device_get(state.params)
    with jax.set_mesh(trainer.mesh):
        new_state, metrics = trainer.step_function(jax.tree.map(lambda x: x.sharding, state))(
            state, trainer.to_global(_batches(trainer.config, 1)[0])
        )
    assert metrics["skipped"] == 1.0 and metrics["nonfinite_in_a_row"] == 1.0
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b), jax.device_get(new_state.params), before)

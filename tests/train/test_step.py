"""The shared train step: micro-batching is exact, sharding does not change the trajectory, the global-batch
balance loss equals its whole-batch formula, non-finite updates are skipped."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from qwen3jax.model import load_balance_loss
from qwen3jax.train.loop import Trainer
from qwen3jax.train.losses import next_token_scores

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
    one, sharded = _trainer(tmp_path / "one", {"data": 1}, moe=moe), _trainer(tmp_path / "mesh", mesh, moe=moe)
    ref_state, ref = _trajectory(one, batches)
    state, got = _trajectory(sharded, batches)
    np.testing.assert_allclose([g["loss"] for g in got], [r["loss"] for r in ref], rtol=2e-5)
    np.testing.assert_allclose([g["grad_norm"] for g in got], [r["grad_norm"] for r in ref], rtol=1e-4)
    # The last update shows in no loss above: compare where the runs end, weights and held-out loss.
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), jax.device_get(state.params),
                 jax.device_get(ref_state.params))  # fmt: skip
    held_out = _batches(tiny_config(moe=moe), 1, seed=1)[0]
    np.testing.assert_allclose(_eval_loss(sharded, state, held_out), _eval_loss(one, ref_state, held_out), rtol=2e-5)


def _eval_loss(trainer, state, batch):
    """The held-out masked next-token loss of `batch`, computed as the `held_out_loss` evaluation does."""

    def mean_ce(params, b):
        model = state.model(params)
        hidden = model(b["tokens"], b["positions"], b["segment_ids"], head=False)
        scores, _, valid = next_token_scores(model, hidden, b, 1)
        return jnp.sum(scores.ce * valid) / jnp.sum(valid)

    with jax.set_mesh(trainer.mesh):
        return float(jax.jit(mean_ce)(state.params, trainer.to_global(batch)))


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


def _adamw_reference(params, grads, m, v, t, *, lr, o):
    """optax's AdamW by hand (NumPy, float64): global-norm clipping, bias-corrected moments, decoupled weight decay
    on every weight but norm gains and embeddings. `t` is 1 on the first update."""
    norm = np.sqrt(sum(np.sum(np.square(g, dtype=np.float64)) for g in grads.values()))
    scale = min(1.0, o.clip_norm / norm)
    new = {}
    for name, p in params.items():
        g = grads[name] * scale
        m[name] = o.b1 * m.get(name, 0.0) + (1 - o.b1) * g
        v[name] = o.b2 * v.get(name, 0.0) + (1 - o.b2) * g * g
        m_hat, v_hat = m[name] / (1 - o.b1**t), v[name] / (1 - o.b2**t)
        decays = "norm" not in name and "embed_tokens" not in name
        new[name] = p - lr * (m_hat / (np.sqrt(v_hat) + o.eps) + (o.weight_decay * p if decays else 0.0))
    return new, norm


def _by_name(tree):
    return {jax.tree_util.keystr(path): np.asarray(leaf, np.float64)
            for path, leaf in jax.tree_util.tree_leaves_with_path(jax.device_get(tree))}  # fmt: skip


def test_two_train_steps_equal_hand_applied_adamw(tmp_path):
    """The optimizer the step applies is AdamW with clipping, the decay mask and the scheduled rate: checked against
    a NumPy AdamW fed the loss's gradients at the reference's own parameters."""
    overrides = {"optim.warmup_steps": 1, "optim.clip_norm": 0.05, "optim.weight_decay": 0.5, "optim.peak_lr": 1e-2}
    trainer = _trainer(tmp_path, {"data": 1}, steps=6, **overrides)
    o, batches = trainer.config.optim, _batches(trainer.config, 2)
    state = trainer.init_state()
    graphdef, loss_fn = state.graphdef, trainer.loss_fn

    @jax.jit
    def grads_at(params, batch):
        ctx = loss_fn.context(lambda: nnx.merge(graphdef, params), jax.tree.map(lambda x: x[None], batch))
        return jax.grad(lambda p: loss_fn(nnx.merge(graphdef, p), batch, ctx)[0])(params)

    # Update 0 uses the peak (one warmup step); update 1 is 1/5 into the cosine decay over the remaining 5 steps.
    end = o.peak_lr * o.end_lr_ratio
    rates = [o.peak_lr, end + (o.peak_lr - end) * 0.5 * (1 + np.cos(np.pi / 5))]
    ref, m, v = _by_name(state.params), {}, {}
    structure = jax.tree.structure(state.params)
    step = trainer.step_function(jax.tree.map(lambda x: x.sharding, state))
    for t, (batch, lr) in enumerate(zip(batches, rates), start=1):
        batch = {k: jnp.asarray(x) for k, x in batch.items()}
        ref_params = jax.tree.unflatten(structure, [jnp.asarray(x, jnp.float32) for x in ref.values()])
        ref, norm = _adamw_reference(ref, _by_name(grads_at(ref_params, batch)), m, v, t, lr=lr, o=o)
        with jax.set_mesh(trainer.mesh):
            state, metrics = step(state, trainer.to_global(jax.device_get(batch)))
        assert norm > 2 * o.clip_norm  # clipping is exercised
        np.testing.assert_allclose(metrics["grad_norm"], norm, rtol=1e-5)
        got = _by_name(state.params)
        for name in ref:
            np.testing.assert_allclose(got[name], ref[name], rtol=1e-5, atol=1e-5, err_msg=f"update {t}: {name}")


def test_training_on_one_batch_drives_the_loss_far_below_chance(tmp_path):
    """The step learns: 40 updates on one fixed batch of random tokens memorise it, from ln(V) to a small loss."""
    trainer = _trainer(tmp_path, {"data": 1}, steps=40, **{"optim.warmup_steps": 2, "optim.peak_lr": 3e-2})
    batch = _batches(trainer.config, 1)[0]
    state, history = _trajectory(trainer, [batch] * 40)
    losses = [float(h["ce"]) for h in history]
    chance = np.log(trainer.config.model.vocab_size)
    assert abs(losses[0] - chance) < 0.1  # the fresh model is at chance
    assert losses[-1] < 0.2 * chance, losses

"""Expert and context parallelism through the real train step: the AOT path (`compile_train_step`) compiles a
tiny MoE config with expert=8 (explicit all-to-all) and a tiny dense config with context=4, and one step of each
on the simulated mesh equals the same step on one device."""

import jax
import numpy as np
import pytest

from qwen3jax.train.aot import compile_train_step
from qwen3jax.train.loop import Trainer

from .helpers import tiny_config
from .test_step import _batches

CASES = {
    "moe-expert8": (True, {"expert": 8}),
    "dense-context4_data2": (False, {"context": 4, "data": 2}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_parallel_train_step_compiles_ahead_of_time_and_matches_one_device(tmp_path, case):
    moe, mesh = CASES[case]
    overrides = {"model.moe_expert_exchange": "auto"} if moe else {}
    config = tiny_config(moe=moe, **overrides)
    config.mesh.update({"data": 1, **mesh})
    trainer = Trainer(config, tmp_path / "mesh")
    compiled = compile_train_step(trainer)  # from shapes alone, as for a pod
    assert compiled.memory_analysis() is not None

    batch = _batches(config, 1)[0]
    state = trainer.init_state()
    # The executable was traced from an abstract state whose static parts (graphdef, optimizer functions) are other
    # but equal-shaped objects: hand it the real arrays in its own tree structure.
    leaves = jax.tree.leaves(((state, trainer.to_global(batch)), {}))
    assert len(leaves) == compiled.in_tree.num_leaves
    (state, global_batch), _ = jax.tree.unflatten(compiled.in_tree, leaves)
    with jax.set_mesh(trainer.mesh):
        new_state, metrics = compiled(state, global_batch)
    metrics, params = jax.device_get((metrics, new_state.params))

    ref_config = tiny_config(moe=moe, **overrides)
    ref = Trainer(ref_config, tmp_path / "one", devices=jax.devices()[:1])
    ref_state = ref.init_state()
    with jax.set_mesh(ref.mesh):
        ref_new, ref_metrics = ref.step_function(jax.tree.map(lambda x: x.sharding, ref_state))(
            ref_state, ref.to_global(batch)
        )
    ref_metrics, ref_params = jax.device_get((ref_metrics, ref_new.params))
    for key in ("loss", "ce", "grad_norm") + (("balance_loss",) if moe else ()):
        np.testing.assert_allclose(metrics[key], ref_metrics[key], rtol=2e-5, err_msg=key)
    if moe:
        assert metrics["moe_dropped_slots"] == 0  # the CPU exchange is the dropless padded one
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), params, ref_params)

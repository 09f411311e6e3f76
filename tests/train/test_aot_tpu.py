"""Compiling for real TPU slices from this CPU machine (qwen3jax.aot): slice names against gcloud's documented
shapes, every documented full-size run's defaults against its slice, the compiled-program cost walker against
formulas, and — when the TPU compiler (libtpu) is installed — a
dense and an MoE train step compiled for TPU slices, a step that does not fit, and a mesh that does not match."""

import importlib
import importlib.util
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from qwen3jax.model import ModelConfig
from qwen3jax.parallel.mesh import make_mesh, mesh_shape_from
from qwen3jax.parallel.topology import CHIPS, default_grid, parse_slice
from qwen3jax.train.aot import parse_out_of_memory
from qwen3jax.train.config import documented_runs
from qwen3jax.train.loop import resolve_micro_batches
from qwen3jax.train.hlo_cost import program_cost

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
needs_libtpu = pytest.mark.skipif(
    importlib.util.find_spec("libtpu") is None, reason="the TPU compiler (pip package libtpu, extra 'tpu') is absent"
)

# gcloud's default slice shapes (Cloud TPU docs, v5p and v5e configuration tables): accelerator type → chip grid.
GCLOUD_SHAPES = {
    "v5p-8": (2, 2, 1), "v5p-16": (2, 2, 2), "v5p-32": (2, 2, 4), "v5p-64": (2, 4, 4), "v5p-128": (4, 4, 4),
    "v5p-256": (4, 4, 8), "v5p-512": (4, 8, 8), "v5p-1024": (8, 8, 8), "v5litepod-1": (1, 1), "v5litepod-4": (2, 2),
    "v5litepod-8": (2, 4), "v5litepod-16": (4, 4), "v5litepod-32": (4, 8), "v5litepod-64": (8, 8),
    "v5litepod-128": (8, 16), "v5litepod-256": (16, 16),
}  # fmt: skip


@pytest.mark.parametrize("name,grid", sorted(GCLOUD_SHAPES.items()))
def test_accelerator_types_have_gclouds_shapes(name, grid):
    tpu_slice = parse_slice(name)
    assert tpu_slice.grid == grid
    assert tpu_slice.accelerator_type == name  # and back
    assert parse_slice(tpu_slice.compiler_name) == tpu_slice


def test_slice_names_count_tensorcores_where_gcloud_does_and_bad_names_are_one_clear_error():
    assert parse_slice("v5p-128").chips == 64 and parse_slice("v5e-16").chips == 16  # cores vs chips
    assert parse_slice("tpu7x-256").chips == 128 and parse_slice("v6e-64").grid == (8, 8)
    assert parse_slice("v5p:4x4x8").accelerator_type == "v5p-256"
    assert parse_slice("v5p-512").hosts == 64 and parse_slice("v5litepod-4").hosts == 1
    for bad, message in [("v5p-7", "multiple of 2"), ("v5p-24", "no standard 3-D slice shape"), ("v9-8", "unknown TPU"),
                         ("v5e:4x4x4", "2-D chip grid"), ("v5p", "not of the form")]:  # fmt: skip
        with pytest.raises(ValueError, match=message):
            parse_slice(bad)
    assert default_grid(2048, 3) == (8, 16, 16) and CHIPS["v5p"].hbm_bytes == 95 * 2**30


@pytest.mark.parametrize("experiment,preset,topology", documented_runs())
def test_every_documented_full_size_run_divides_its_slice(experiment, preset, topology):
    """The defaults of each documented (experiment, preset, slice) — the README's AOT table — lay a mesh over
    exactly the slice's chips (one JAX device per chip on v5e and v5p) and cut the global batch into micro-batches
    of whole sequences on every batch shard, and (with libtpu) the mesh can be laid on the slice's chip torus; the
    compiles of that table check the memory."""
    config = importlib.import_module(f"experiments.{experiment}").get_config(preset)
    assert config.hardware.slice == topology  # the slice `python -m qwen3jax.aot` compiles for by default
    mesh = mesh_shape_from(dict(config.mesh), parse_slice(topology).chips)
    micro_batches = resolve_micro_batches(config.global_batch, config.micro_batches, mesh)
    batch_shards = mesh["data"] * mesh["fsdp"] * mesh["expert"]
    sequences_per_shard = config.global_batch // (micro_batches * batch_shards)
    assert sequences_per_shard >= 1 and micro_batches * batch_shards * sequences_per_shard == config.global_batch
    model = ModelConfig.from_dict(config.model.to_dict())
    if model.is_moe:  # every expert rank holds the same number of whole experts
        assert mesh["expert"] > 1 and model.num_experts % mesh["expert"] == 0
    if experiment == "pretrain_s3":  # each 32K sequence split over the context axis (model/context_parallel.py)
        assert mesh["context"] > 1 and config.seq_len % mesh["context"] == 0
    if importlib.util.find_spec("libtpu") is not None:  # and the mesh maps onto the slice's physical torus
        from qwen3jax.parallel.topology import topology_devices

        assert dict(make_mesh(dict(config.mesh), topology_devices(parse_slice(topology))).shape) == mesh


def _scanned_matmuls(w_LDD, x_BD):
    def layer(x, w):
        return jnp.tanh(x @ w), None

    x, _ = jax.lax.scan(layer, x_BD, w_LDD)
    x = jax.lax.fori_loop(0, 3, lambda i, x: x @ w_LDD[0], x)  # a second loop, 3 trips
    return jnp.sum(x)


def test_program_cost_counts_every_loop_trip():
    """grad of 6 scanned [512, 256] x [256, 256] products and 3 more in a loop: each runs forward and twice
    backward (input and weight gradients). XLA's own analysis counts each loop body once."""
    w, x = jnp.zeros((6, 256, 256), jnp.float32), jnp.zeros((512, 256), jnp.float32)
    compiled = jax.jit(jax.grad(_scanned_matmuls)).lower(w, x).compile()
    product = 2 * 512 * 256 * 256
    expected = (6 + 3) * product * 3  # forward + two backward products each
    cost = program_cost(compiled.as_text())
    assert cost.flops == expected and cost.unknown_trip_counts == 0
    assert compiled.cost_analysis()["flops"] < expected / 2  # why this walker exists
    # Every product reads its operands and writes its result at least once per trip.
    assert cost.bytes_accessed >= (6 + 3) * 3 * 4 * (512 * 256 * 2 + 256 * 256)


@pytest.mark.parametrize(
    "width,window,padding,stride,lhs_dilation",
    # The TPU compiler's batched-matmul form (a 16-tap window over a 1-wide input padded by 15: 16 heads, one
    # product each), a strided window, a dilated input (a strided convolution's gradient), no padding.
    [(1, 16, (15, 15), 1, 1), (5, 4, (3, 1), 2, 1), (5, 3, (2, 2), 1, 3), (9, 3, (0, 0), 1, 1)],
)
def test_convolution_flops_count_the_window_taps_that_read_the_input_not_padding(width, window, padding, stride,
                                                                                  lhs_dilation):  # fmt: skip
    def conv(x, w):
        return jax.lax.conv_general_dilated(x, w, (stride,), [padding], lhs_dilation=(lhs_dilation,))

    batch, features_in, features_out = 2, 3, 4
    x, w = jnp.ones((batch, features_in, width)), jnp.ones((features_out, features_in, window))
    text = jax.jit(conv).lower(x, w).compile().as_text()
    # Reference: the (output, tap) pairs that read an input element are the entries of d output / d input of a
    # one-feature convolution with unit weights; each is a multiply-add per batch row and feature pair.
    one_feature = jax.jacobian(lambda v: conv(v[None, None], jnp.ones((1, 1, window)))[0, 0])(jnp.ones(width))
    assert program_cost(text).flops == 2 * batch * features_in * features_out * float(jnp.sum(one_feature))


def test_out_of_memory_messages_are_recognised():
    message = ("RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory required for HLO temporaries "
               "(59.48G) exceeds available HBM (15.75G).")  # fmt: skip  (the TPU compiler's, for 8B layers on 1 v5e)
    found = parse_out_of_memory(message)
    assert found["needed"] == int(59.48 * 2**30) and found["available"] == int(15.75 * 2**30)
    assert found["temporaries_only"]
    assert parse_out_of_memory("Used 100.5G of 95.74G hbm. Exceeded hbm capacity by 4.76G.")["needed"] == int(100.5 * 2**30)
    assert parse_out_of_memory("INVALID_ARGUMENT: something else") is None


def _aot(*args, timeout=1500):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.join(REPO, "src"), REPO]))
    return subprocess.run([sys.executable, "-m", "qwen3jax.aot", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)  # fmt: skip


def _tiny_on(preset, topology, tmp_path, **overrides):
    from experiments import pretrain_s1
    from qwen3jax.parallel.topology import topology_devices
    from qwen3jax.train.aot import slice_report
    from qwen3jax.train.loop import Trainer

    config = pretrain_s1.get_config(preset)
    config.model.attention_kernel = "auto"  # the accelerator setting of full-size variants: splash on TPU
    for key, value in overrides.items():
        node, *path = key.split(".")
        target = config
        for part in [node, *path][:-1]:
            target = target[part]
        target[[node, *path][-1]] = value
    tpu_slice = parse_slice(topology)
    trainer = Trainer(config, tmp_path, devices=topology_devices(tpu_slice))
    return trainer, slice_report(trainer, tpu_slice)


# The ragged-MoE train step's compiled matmul FLOPs on TPU (tiny_moe on v5p-8, expert-parallel ragged exchange):
# 1.21x the model's (1.29x with the attention kernels' estimate). Per-op attribution of the compiled HLO: the forward
# and input-gradient ragged_dots compile to Mosaic grouped-matmul kernels, but the weight gradient — the transpose of
# ragged_dot, a ragged_dot_general whose ragged dimension is the contracting one — is lowered by this libtpu as a
# dense masked matmul over every local expert and every row of the (worst-case sized) receive buffer: here 0.47x of
# the model's FLOPs for ~1/8 of that useful work; the waste grows with the local experts per device (16 for
# 30B-A3B on its planned mesh). Without the exchange (GSPMD over expert-sharded weights) every device also computes
# every token: ragged_dot cannot be split along its rows.


@needs_libtpu
@pytest.mark.slow
@pytest.mark.parametrize(
    "preset,topology,mesh",
    [("tiny", "v5litepod-4", {"data": 1, "fsdp": 4}), ("tiny_moe", "v5p-8", {"data": 1, "fsdp": 2, "expert": 2})],
)
def test_train_step_compiles_for_a_tpu_slice(tmp_path, preset, topology, mesh):
    overrides = {f"mesh.{axis}": size for axis, size in mesh.items()}
    moe = preset == "tiny_moe"
    if moe:  # what full-size MoE variants run on TPU: grouped matmuls, tokens exchanged with ragged all-to-all
        overrides.update({"model.moe_kernel": "ragged", "model.moe_expert_exchange": "auto"})
    trainer, report = _tiny_on(preset, topology, tmp_path, **overrides)
    assert "TPU_WORKER_HOSTNAMES" not in os.environ  # libtpu's loading settings do not make this process a TPU VM
    assert report["fits"] and report["chips"] == 4 and report["attention_kernel"] == "splash"
    assert report["mesh"] == mesh | {"data": 1} or report["mesh"] == {k: v for k, v in mesh.items() if v > 1}
    # fp32 weights sharded 4 ways (fsdp x expert), norms replicated: ~ 4 bytes x params / 4 per chip.
    params = trainer.model_cfg.param_counts()["total"]
    assert params <= report["arguments_per_chip"]["params"] <= 1.05 * params
    assert report["bytes_per_chip"] >= report["memory_per_chip"]["arguments"] - report["memory_per_chip"]["aliased"]
    # The real TPU collective (XLA:CPU has none; CPU tests emulate it): dispatch and return, forward and backward.
    assert report["collectives"].get("ragged-all-to-all", 0) == (4 if moe else 0), report["collectives"]
    # Every layer, micro-batch and product of the compiled step is counted (never a loop body once, never a padded
    # window tap): with the attention kernels' own FLOPs (invisible to XLA, estimated), the dense step is exactly the
    # model's formula; the MoE step more (the expert weight gradient above), at most 1.5x.
    flops = report["flops_per_step"]
    assert flops["kernels_estimate"] > 0
    compiled = flops["xla"] + flops["kernels_estimate"]
    if moe:
        assert flops["model"] < compiled <= 1.5 * flops["model"], flops
    else:
        assert compiled == pytest.approx(flops["model"], rel=1e-3), flops
    estimate = report["estimate"]
    assert 0 < estimate["mfu"] <= 1 and estimate["step_seconds"] == max(estimate["compute_seconds"], estimate["memory_seconds"])


@needs_libtpu
@pytest.mark.slow
def test_a_step_that_does_not_fit_is_a_report_with_exit_status_3_and_a_wrong_mesh_one_error_line(tmp_path):
    report_path = tmp_path / "report.json"
    result = _aot("--config=experiments/pretrain_s1.py:tiny", "--topology=v5litepod-1", "--config.global_batch=256",
                  "--config.seq_len=4096", "--config.micro_batches=1", "--config.loss.vocab_slices=1",
                  f"--report={report_path}")  # fmt: skip
    assert result.returncode == 3, result.stderr[-2000:]
    report = json.loads(report_path.read_text())
    assert not report["fits"] and report["bytes_per_chip"] > report["hbm_bytes_per_chip"]
    assert report["top_consumers"][0]["what"].startswith("temporaries")
    biggest = report["largest_arrays"][0]  # the logits of every token of the batch: [256 * 4096, 8192]
    assert biggest["shape"] == [256 * 4096, 8192] and biggest["bytes"] == 256 * 4096 * 8192 * 4
    assert "DOES NOT FIT" in result.stdout

    wrong = _aot("--config=experiments/pretrain_s1.py:tiny", "--topology=v5litepod-4", "--config.mesh.data=8")
    assert wrong.returncode == 1
    lines = wrong.stderr.strip().splitlines()
    assert lines[-1].startswith("error: mesh") and "needs 8 devices but 4 are available" in lines[-1]
    assert "Traceback" not in wrong.stderr


# A loop as the TPU compiler prints it: no known_trip_count, a `counter < 6` condition and a body that adds 2
# (unrolled twice), so 3 trips of a [8, 16] x [16, 4] product.
UNROLLED_LOOP_HLO = """
%body (p: (s32[], f32[8,16], f32[16,4])) -> (s32[], f32[8,16], f32[16,4]) {
  %p = (s32[]{:T(128)}, f32[8,16]{1,0}, f32[16,4]{1,0}) parameter(0)
  %i = s32[]{:T(128)} get-tuple-element(%p), index=0
  %x = f32[8,16]{1,0} get-tuple-element(%p), index=1
  %w = f32[16,4]{1,0} get-tuple-element(%p), index=2
  %y = f32[8,4]{1,0} convolution(%x, %w), dim_labels=bf_io->bf
  %two = s32[]{:T(128)} constant(2)
  %next = s32[]{:T(128)} add(%i, %two)
  ROOT %t = (s32[]{:T(128)}, f32[8,16]{1,0}, f32[16,4]{1,0}) tuple(%next, %x, %w)
}

%cond (p.1: (s32[], f32[8,16], f32[16,4])) -> pred[] {
  %six = s32[]{:T(128)} constant(6)
  %p.1 = (s32[]{:T(128)}, f32[8,16]{1,0}, f32[16,4]{1,0}) parameter(0)
  %i.1 = s32[]{:T(128)} get-tuple-element(%p.1), index=0
  ROOT %lt = pred[]{:T(512)} compare(%i.1, %six), direction=LT
}

ENTRY %main (a: f32[8,16], b: f32[16,4]) -> f32[8,16] {
  %a = f32[8,16]{1,0} parameter(0)
  %b = f32[16,4]{1,0} parameter(1)
  %zero = s32[]{:T(128)} constant(0)
  %init = (s32[]{:T(128)}, f32[8,16]{1,0}, f32[16,4]{1,0}) tuple(%zero, %a, %b)
  %loop = (s32[]{:T(128)}, f32[8,16]{1,0}, f32[16,4]{1,0}) while(%init), condition=%cond, body=%body
  ROOT %out = f32[8,16]{1,0} get-tuple-element(%loop), index=1
}
"""


def test_trip_counts_without_xla_annotation_come_from_the_loop_condition_and_step():
    cost = program_cost(UNROLLED_LOOP_HLO)
    assert cost.flops == 3 * 2 * 8 * 16 * 4 and cost.unknown_trip_counts == 0

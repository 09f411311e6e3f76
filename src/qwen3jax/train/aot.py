"""Ahead-of-time compilation of an experiment's train step from shapes alone (no weights are allocated).

`compile_train_step(trainer)` compiles for the trainer's mesh: on a simulated CPU mesh
(XLA_FLAGS=--xla_force_host_platform_device_count=N) it shows shape and sharding bugs of pod-size configs on a
laptop or in CI (tests/train/test_aot.py); over the devices of a TPU slice (`parallel.topology`, needs libtpu but no
TPU) the TPU compiler compiles it, and `slice_report` says what that program needs per chip, whether it fits and
a roofline estimate of its speed (the `python -m qwen3jax.aot` command).
"""

from __future__ import annotations

import math
import re
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jex

from qwen3jax.parallel.topology import Slice
from qwen3jax.train.hlo_cost import program_cost
from qwen3jax.train.loop import Trainer
from qwen3jax.train.state import create_train_state
from qwen3jax.train.step import TrainState


def abstract_train_state(trainer: Trainer) -> TrainState:
    """The train state as sharded ShapeDtypeStructs, laid out exactly as `Trainer.init_state` would place it."""
    c = trainer.config
    state, trainer.schedule = create_train_state(trainer.model_cfg, c.optim, c.steps, trainer.mesh, seed=c.seed,
                                                 abstract=True)  # fmt: skip
    return state


def abstract_batch(trainer: Trainer) -> dict[str, jax.ShapeDtypeStruct]:
    """The experiment's global batch as sharded ShapeDtypeStructs: the loss's batch spec at the config's sizes."""
    return trainer.layout.abstract()


def compile_train_step(trainer: Trainer):
    """Lower and compile the experiment's train step for its full global batch; returns the compiled executable."""
    state = abstract_train_state(trainer)
    step = trainer.step_function(jax.tree.map(lambda x: x.sharding, state))
    with jax.set_mesh(trainer.mesh):
        return step.lower(state, abstract_batch(trainer)).compile()


ROOFLINE_NOTE = (
    "roofline estimate, not a measurement: per chip, max(compiled matmul FLOPs / peak bf16 FLOP/s, estimated HBM "
    "bytes / HBM bandwidth); it ignores communication, imperfect overlap and non-matmul compute, so real step "
    "times are longer and real MFU lower"
)


def slice_report(trainer: Trainer, tpu_slice: Slice) -> dict:
    """Compile the train step for a TPU slice (the trainer's mesh must be over its devices) and report memory per
    chip, whether it fits the chip's HBM, FLOPs, compile time and a roofline estimate of step time and MFU. A
    program that does not fit is reported (`fits: False`, with the compiler's largest allocations), not raised."""
    c, chip = trainer.config, tpu_slice.chip
    devices_per_chip = trainer.mesh.size // tpu_slice.chips
    state = abstract_train_state(trainer)
    report = {
        "experiment": c.name,
        "variant": c.variant,
        "topology": tpu_slice.accelerator_type,
        "grid": tpu_slice.topology,
        "chip": chip.name,
        "chips": tpu_slice.chips,
        "devices": trainer.mesh.size,
        "mesh": {axis: size for axis, size in trainer.mesh.shape.items() if size > 1} or {"data": 1},
        "global_batch": c.global_batch,
        "seq_len": c.seq_len,
        "micro_batches": trainer.micro_batches,
        "attention_kernel": trainer.model_cfg.attention_kernel,
        "moe_kernel": c.model.moe_kernel if c.model.num_experts else None,
        "remat": c.model.remat,
        "hbm_bytes_per_chip": chip.hbm_bytes,
        "arguments_per_chip": {
            "params": devices_per_chip * _shard_bytes(state.params),
            "opt_state": devices_per_chip * _shard_bytes(state.opt_state),
            "batch": devices_per_chip * _shard_bytes(abstract_batch(trainer)),
        },
    }
    start, cpu_start = time.perf_counter(), time.process_time()
    try:
        compiled = compile_train_step(trainer)
    except Exception as e:  # the TPU compiler refuses programs larger than HBM: that is a result, not a crash
        out_of_memory = parse_out_of_memory(str(e))
        if out_of_memory is None:
            raise
        report.update(_compile_times(start, cpu_start), fits=False, compiler_error=out_of_memory["message"])
        arguments = sum(report["arguments_per_chip"].values())
        temporaries = devices_per_chip * out_of_memory["needed"]
        # The compiler stops at the first space that overflows: its figure, plus the arguments when it counted
        # temporaries alone, is a lower bound of the peak.
        report["bytes_per_chip"] = temporaries + arguments if out_of_memory["temporaries_only"] else temporaries
        step = trainer.step_function(jax.tree.map(lambda x: x.sharding, state))
        report["top_consumers"] = sorted(
            [{"what": f"arguments: {k}", "bytes_per_chip": v} for k, v in report["arguments_per_chip"].items()]
            + [{"what": "temporaries (activations, gradients, workspace; compiler)", "bytes_per_chip": temporaries}],
            key=lambda c: -c["bytes_per_chip"],
        )
        with jax.set_mesh(trainer.mesh):
            report["largest_arrays"] = largest_arrays(step, state, abstract_batch(trainer))
        return report
    memory = compiled.memory_analysis()
    per_device = (memory.argument_size_in_bytes + memory.temp_size_in_bytes + memory.output_size_in_bytes
                  - memory.alias_size_in_bytes)  # fmt: skip
    cost = program_cost(compiled.as_text())
    report.update(_compile_times(start, cpu_start))
    report.update(
        bytes_per_chip=devices_per_chip * per_device,
        fits=per_device * devices_per_chip <= chip.hbm_bytes,
        memory_per_chip={
            "arguments": devices_per_chip * memory.argument_size_in_bytes,
            "temporaries": devices_per_chip * memory.temp_size_in_bytes,
            "outputs": devices_per_chip * memory.output_size_in_bytes,
            "aliased": devices_per_chip * memory.alias_size_in_bytes,
            "generated_code": devices_per_chip * memory.generated_code_size_in_bytes,
        },
        flops_per_step={
            "model": trainer.flops_per_step,
            "xla": cost.flops * trainer.mesh.size,  # the compiled program's matmuls, outside Pallas kernels
            "kernels_estimate": _kernel_flops(trainer) if cost.kernel_calls else 0.0,
        },
        loops_without_static_trip_count=cost.unknown_trip_counts,
        collectives=collective_counts(compiled.as_text()),
    )
    executed = cost.flops + report["flops_per_step"]["kernels_estimate"] / trainer.mesh.size
    compute_s = executed * devices_per_chip / chip.peak_bf16_flops
    memory_s = cost.bytes_accessed * devices_per_chip / chip.hbm_bytes_per_s
    step_s = max(compute_s, memory_s)
    report["estimate"] = {
        "step_seconds": step_s,
        "compute_seconds": compute_s,
        "memory_seconds": memory_s,
        "bound": "compute" if compute_s >= memory_s else "memory",
        "mfu": trainer.flops_per_step / (tpu_slice.chips * chip.peak_bf16_flops * step_s) if step_s else math.nan,
        "tokens_per_second": c.global_batch * c.seq_len / step_s if step_s else math.nan,
        "note": ROOFLINE_NOTE,
    }
    return report


_COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "ragged-all-to-all", "collective-permute")


def collective_counts(hlo_text: str) -> dict[str, int]:
    """How many instructions of each collective the compiled program holds (async `-start` halves included; loop
    trips not multiplied): which exchanges the partitioner and our shard_maps put in the step."""
    found = re.findall(r" (" + "|".join(sorted(_COLLECTIVES, key=len, reverse=True)) + r")(?:-start)?\(", hlo_text)
    return {name: found.count(name) for name in _COLLECTIVES if name in found}


def _kernel_flops(trainer: Trainer) -> float:
    """FLOPs of the attention kernels per step (they declare none to XLA): the model's causal attention count,
    once more for the forward pass a full remat recomputes."""
    c, cfg = trainer.config, trainer.model_cfg
    attention = (cfg.flops_per_token(c.seq_len) - cfg.flops_per_token(0)) * c.global_batch * c.seq_len
    return attention * (4 / 3 if cfg.remat == "full" else 1.0)


def _compile_times(start: float, cpu_start: float) -> dict[str, float]:
    return {"compile_seconds": time.perf_counter() - start, "compile_cpu_seconds": time.process_time() - cpu_start}


def _shard_bytes(tree) -> int:
    """Bytes one device holds of a tree of sharded ShapeDtypeStructs."""
    leaves = [x for x in jax.tree.leaves(tree) if hasattr(x, "sharding") and x.sharding is not None]
    return sum(math.prod(x.sharding.shard_shape(x.shape)) * jnp.dtype(x.dtype).itemsize for x in leaves)


_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def parse_out_of_memory(message: str) -> dict | None:
    """The TPU compiler's out-of-memory error → {needed, available} bytes per device (as the compiler counts
    them; `needed` may be the temporaries alone); None for any other error."""
    patterns = (
        r"Used ([\d.]+[KMGT]?) of ([\d.]+[KMGT]?) hbm",  # with a list of the largest allocations
        r"HLO temporaries \(([\d.]+[KMGT]?)\) exceeds available HBM \(([\d.]+[KMGT]?)\)",  # temporaries alone
    )
    for pattern in patterns:
        found = re.search(pattern, message, flags=re.IGNORECASE)
        if found:
            return {"needed": _to_bytes(found.group(1)), "available": _to_bytes(found.group(2)),
                    "temporaries_only": "temporaries" in pattern, "message": message.strip().splitlines()[0][:300]}  # fmt: skip
    return None


def _to_bytes(text: str) -> int:
    number, unit = re.fullmatch(r"([\d.]+)([KMGT]?)", text).groups()
    return int(float(number) * _UNITS[unit])


def largest_arrays(fn, *args, count: int = 5) -> list[dict]:
    """The `count` largest intermediate arrays of `fn(*args)`'s jaxpr (scan and loop bodies included): primitive,
    global shape and dtype, bytes. Global sizes: each device holds its shard of those that are sharded."""
    found: dict[tuple, dict] = {}

    def walk(jaxpr):
        for eqn in jaxpr.eqns:
            for var in eqn.outvars:
                aval = var.aval
                if hasattr(aval, "shape") and isinstance(getattr(aval, "dtype", None), np.dtype):  # not PRNG keys
                    size = math.prod(aval.shape) * jnp.dtype(aval.dtype).itemsize
                    key = (eqn.primitive.name, tuple(aval.shape), str(aval.dtype))
                    found[key] = {"op": key[0], "shape": list(key[1]), "dtype": key[2], "bytes": size}
            for sub in jex.jaxprs_in_params(eqn.params):
                walk(sub)

    walk(jax.make_jaxpr(fn)(*args).jaxpr)
    return sorted(found.values(), key=lambda a: -a["bytes"])[:count]

"""Compile an experiment's train step for a real TPU slice on any machine (the TPU compiler from the `libtpu`
package; no TPU needed) and report what it needs per chip:

    python -m qwen3jax.aot --config=experiments/pretrain_s1.py:qwen3_8b --topology=v5p-64 [--config.x=y ...]
        [--report=report.json]
    python -m qwen3jax.aot --table [--table_dir=aot_reports] [--only=REGEX]   # every documented slice, as Markdown

`--topology` takes gcloud accelerator types (`v5p-64` = 64 TensorCores = 32 chips; `v5litepod-16` = 16 chips) or
chip grids (`v5p:4x4x2`). The config's mesh is laid over the slice's devices (`--config.mesh.fsdp=-1` fills it).
Without a variant the experiment's full-size default is compiled (the run is planned for TPU).

Exit status: 0 when the step fits the chips' HBM, 3 when it does not (the report names the largest allocations),
1 on a configuration error (unknown slice, a mesh that does not match it, libtpu missing), printed in one line.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import sys
import tempfile

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "experiment file[:variant]", lock_config=True)
_TOPOLOGY = flags.DEFINE_string("topology", None, "TPU slice: gcloud accelerator type (v5p-64) or grid (v5p:4x4x2); "
                                "default: the slice the config is planned for (config.hardware.slice)")
_REPORT = flags.DEFINE_string("report", None, "write the report as JSON to this file")
_TABLE = flags.DEFINE_bool("table", False, "compile every documented (experiment, preset, slice) and print a table")
_TABLE_DIR = flags.DEFINE_string("table_dir", "aot_reports", "--table: one JSON report per row (kept: rerun skips)")
_ONLY = flags.DEFINE_string("only", "", "--table: only rows whose 'experiment:preset@slice' matches this regex")
_REDO = flags.DEFINE_bool("redo", False, "--table: compile rows again even when their report exists")

NO_FIT_EXIT = 3


def main(argv) -> None:
    del argv
    if _TABLE.value:
        print(table())
        return
    topology = _TOPOLOGY.value or (_CONFIG.value.hardware.slice if _CONFIG.value is not None else "")
    if _CONFIG.value is None or not topology:
        fail("give --config=experiments/<exp>.py[:<preset>] and --topology=<slice> (a preset without a planned "
             "slice), or --table")
    report = compile_report(_CONFIG.value, topology)
    print(summary(report))
    if _REPORT.value:
        pathlib.Path(_REPORT.value).write_text(json.dumps(report, indent=2))
    if not report["fits"]:
        sys.exit(NO_FIT_EXIT)


def compile_report(config, topology: str) -> dict:
    """The slice report of `config`'s train step (train/aot.py), configuration problems as one-line exits."""
    from qwen3jax.parallel.topology import LibTpuMissing, parse_slice, topology_devices
    from qwen3jax.train.aot import slice_report
    from qwen3jax.train.loop import RunStopped, Trainer

    try:
        tpu_slice = parse_slice(topology)
        devices = topology_devices(tpu_slice)
        with tempfile.TemporaryDirectory() as workdir:  # the trainer's run directory: nothing is written there
            trainer = Trainer(config, workdir, devices=devices)
        return slice_report(trainer, tpu_slice)
    except (LibTpuMissing, RunStopped, ValueError, KeyError) as e:
        fail(f"{e}")


def summary(r: dict) -> str:
    gb = 1e9
    lines = [
        f"{r['experiment']}:{r['variant']} on {r['topology']} ({r['chips']} {r['chip']} chips, {r['grid']}; "
        f"{r['devices']} devices), mesh {r['mesh']}",
        f"  batch {r['global_batch']} x {r['seq_len']} in {r['micro_batches']} micro-batches; remat {r['remat']}, "
        f"attention {r['attention_kernel']}" + (f", MoE {r['moe_kernel']}" if r["moe_kernel"] else ""),
        f"  bytes_per_chip {r['bytes_per_chip'] / gb:.2f} GB of {r['hbm_bytes_per_chip'] / gb:.2f} GB HBM: "
        f"{'fits' if r['fits'] else 'DOES NOT FIT'}",
        "  arguments per chip: " + ", ".join(f"{k} {v / gb:.2f} GB" for k, v in r["arguments_per_chip"].items()),
    ]
    if "memory_per_chip" in r:
        lines.append("  memory per chip: " + ", ".join(f"{k} {v / gb:.2f} GB" for k, v in r["memory_per_chip"].items()))
        flops = r["flops_per_step"]
        lines.append(f"  flops_per_step: model {flops['model']:.3e}, compiled matmuls {flops['xla']:.3e}"
                     + (f" + attention kernels (estimated) {flops['kernels_estimate']:.3e}" if flops["kernels_estimate"] else ""))  # fmt: skip
        e = r["estimate"]
        lines.append(f"  ESTIMATE (roofline): step {e['step_seconds']:.3f} s ({e['bound']}-bound), MFU {e['mfu']:.1%}, "
                     f"{e['tokens_per_second']:,.0f} tok/s — {e['note']}")  # fmt: skip
    if not r["fits"] and "top_consumers" in r:
        lines.append(f"  compiler: {r['compiler_error']}")
        lines += [f"  top consumer: {c['what']}: {c['bytes_per_chip'] / gb:.2f} GB/chip" for c in r["top_consumers"]]
        lines += [f"  largest array: {a['op']} {a['dtype']}{a['shape']} {a['bytes'] / gb:.2f} GB (global)"
                  for a in r["largest_arrays"]]  # fmt: skip
    lines.append(f"  compile_seconds {r['compile_seconds']:.1f} (CPU {r['compile_cpu_seconds']:.1f})")
    return "\n".join(lines)


def table() -> str:
    """Compile every documented row in its own process (kept as JSON under --table_dir) → a Markdown table."""
    out = pathlib.Path(_TABLE_DIR.value)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    from qwen3jax.train.config import documented_runs  # imports jax: only once main has chosen the platform

    for experiment, preset, topology in documented_runs():
        name = f"{experiment}:{preset}@{topology}"
        if _ONLY.value and not re.search(_ONLY.value, name):
            continue
        path = out / f"{experiment}.{preset}.{topology}.json"
        if _REDO.value or not path.exists():
            print(f"compiling {name} ...", file=sys.stderr, flush=True)
            command = [sys.executable, "-m", "qwen3jax.aot", f"--config=experiments/{experiment}.py:{preset}",
                       f"--topology={topology}", f"--report={path}"]  # fmt: skip
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode not in (0, NO_FIT_EXIT):
                rows.append(f"| {experiment} | {preset} | {topology} | error: {_last_line(done.stderr)} | | | | |")
                continue
        rows.append(table_row(json.loads(path.read_text())))
    header = ("| experiment | preset | slice (chips) | mesh | fits | GB/chip (of HBM) | est. MFU | compile s |\n"
              "|---|---|---|---|---|---|---|---|")  # fmt: skip
    return "\n".join([header, *rows])


def table_row(r: dict) -> str:
    mesh = " ".join(f"{k}={v}" for k, v in r["mesh"].items())
    mfu = f"{r['estimate']['mfu']:.0%}" if "estimate" in r else "-"
    return (f"| {r['experiment']} | {r['variant']} | {r['topology']} ({r['chips']}) | {mesh} | "
            f"{'yes' if r['fits'] else '**no**'} | {r['bytes_per_chip'] / 1e9:.1f} ({r['hbm_bytes_per_chip'] / 1e9:.0f}) | "
            f"{mfu} | {r['compile_seconds']:.0f} |")  # fmt: skip


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:200] if lines else "no output"


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(1)


if __name__ == "__main__":
    # Before jax is imported: compile only, never claiming a TPU this machine may have; and plan the config for
    # TPU (train/config.py TARGET_BACKEND_ENV).
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    os.environ.setdefault("QWEN3JAX_TARGET_BACKEND", "tpu")
    try:
        app.run(main)
    except (KeyError, ValueError) as e:  # raised by the experiment's get_config while flags are parsed
        fail(str(e))

"""`python -m qwen3jax.convert import|export`: HF folders ⇄ native checkpoints.

A failure prints one `error: ...` line and exits 1; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import sys
import time

from qwen3jax.convert.common import CheckpointError, check_output_dir
from qwen3jax.convert.hf import load_hf, save_hf
from qwen3jax.convert.native import load_native, save_native
from qwen3jax.model.config import describe


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _import(args: argparse.Namespace) -> None:
    start = time.perf_counter()
    check_output_dir(args.out, args.overwrite)
    _log(f"reading Hugging Face checkpoint {args.hf}")
    cfg, model = load_hf(args.hf, param_dtype=args.param_dtype)
    _log(f"loaded {describe(cfg)} in {time.perf_counter() - start:.1f}s; saving native checkpoint {args.out}")
    save_native(model, args.out, overwrite=args.overwrite)
    _log(f"done in {time.perf_counter() - start:.1f}s: {args.out}")


def _export(args: argparse.Namespace) -> None:
    start = time.perf_counter()
    check_output_dir(args.out, args.overwrite)
    _log(f"reading native checkpoint {args.ckpt}")
    cfg, model = load_native(args.ckpt)
    _log(f"loaded {describe(cfg)} in {time.perf_counter() - start:.1f}s; writing Hugging Face folder {args.out}")
    save_hf(model, cfg, args.out, dtype=args.dtype, max_shard_bytes=int(args.max_shard_gib * 2**30),
            overwrite=args.overwrite)
    _log(f"done in {time.perf_counter() - start:.1f}s: {args.out}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m qwen3jax.convert", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    imp = commands.add_parser("import", help="Hugging Face folder -> native checkpoint")
    imp.add_argument("--hf", required=True, help="folder with config.json and *.safetensors")
    imp.add_argument("--out", required=True, help="native checkpoint directory to create")
    imp.add_argument("--param-dtype", default=None, help="stored weight dtype (default: float32)")
    imp.add_argument("--overwrite", action="store_true", help="replace an existing checkpoint in --out")
    imp.set_defaults(run=_import)

    exp = commands.add_parser("export", help="native checkpoint -> Hugging Face folder")
    exp.add_argument("--ckpt", required=True, help="native checkpoint directory, or a training run directory (its "
                     "newest checkpoint) or one of its checkpoints/<step> directories")
    exp.add_argument("--out", required=True, help="Hugging Face folder to create")
    exp.add_argument("--dtype", default=None, help="stored weight dtype, e.g. bfloat16 (default: the checkpoint's)")
    exp.add_argument("--max-shard-gib", type=float, default=5.0, help="largest safetensors file (GiB)")
    exp.add_argument("--overwrite", action="store_true", help="replace config.json and safetensors files in --out")
    exp.set_defaults(run=_export)

    args = parser.parse_args(argv)
    try:
        args.run(args)
    except (CheckpointError, OSError) as e:
        _log(f"error: {e}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

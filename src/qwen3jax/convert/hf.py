"""Read and write Hugging Face Qwen3 / Qwen3-MoE folders (`config.json` + safetensors) without torch.

Loading never materialises a random init or a whole stacked parameter on the host: the model is built abstractly,
and each parameter is assembled with `jax.make_array_from_callback`, whose callback reads from the safetensors
files only the slice one device shard needs (placing it straight onto its sharding when a mesh is given). Every
tensor is checked against the layout before any is read, so a checkpoint either loads completely or not at all.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import re
from pathlib import Path

import jax
import ml_dtypes  # noqa: F401  registers bfloat16 with numpy: safetensors' numpy reader needs it for BF16
import numpy as np
from flax import nnx, traverse_util
from jax.sharding import Mesh
from safetensors import safe_open
from safetensors.numpy import save_file

from qwen3jax.convert.common import (
    CheckpointError,
    abstract_model,
    apply_overrides,
    build_model,
    float_dtype,
    prepare_output_dir,
    progress_bar,
    require_dir,
)
from qwen3jax.convert.hf_config import config_from_hf, config_to_hf
from qwen3jax.convert.layout import Layout, Leaf, Slab, hf_layout
from qwen3jax.model import ModelConfig, Qwen3

CONFIG = "config.json"
INDEX = "model.safetensors.index.json"
_FLOAT_DTYPES = {"F16", "BF16", "F32", "F64"}
_FUSED_KEY = re.compile(r"model\.layers\.(\d+)\.mlp\.experts\.gate_up_proj")
_MAX_LISTED = 8  # problems listed in one error message


def read_hf_config(path: str | Path) -> ModelConfig:
    """The `ModelConfig` of an HF checkpoint folder's `config.json`."""
    file = require_dir(path, "Hugging Face checkpoint") / CONFIG
    if not file.is_file():
        raise CheckpointError(f"{file} does not exist; a Hugging Face checkpoint folder needs one")
    return config_from_hf(_read_json(file), str(file))


def _read_json(file: Path) -> dict:
    try:
        data = json.loads(file.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{file} is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{file} does not hold a JSON object")
    return data


def load_hf(
    path: str | Path, *, mesh: Mesh | None = None, progress: bool | None = None, **overrides
) -> tuple[ModelConfig, Qwen3]:
    """Load an HF Qwen3 / Qwen3-MoE folder as `(ModelConfig, Qwen3)`.

    Args:
      path: folder with `config.json` and `model.safetensors`, or sharded `*.safetensors` with
        `model.safetensors.index.json`.
      mesh: place every parameter onto its sharding from `parallel.state_shardings`; default: the first local
        device.
      progress: show a progress bar; default: only for loads of 1 GiB or more on a terminal.
      **overrides: runtime `ModelConfig` fields (`param_dtype`, `dtype`, `remat`, `scan_layers`, `moe_kernel`,
        `moe_block_size`). Weights are stored as `param_dtype` (default float32) whatever the file's dtype.
    """
    path = Path(path)
    cfg = apply_overrides(read_hf_config(path), overrides)
    with _TensorFiles(path) as files:
        fused = {int(m.group(1)) for key in files.shapes if (m := _FUSED_KEY.fullmatch(key))}
        layout = hf_layout(cfg, fused)
        _check_tensors(files, layout, cfg, path)
        graphdef, abstract_state, shapes, shardings = abstract_model(cfg, mesh)
        _check_layout_covers(layout, shapes, "internal error: the HF layout table does not match the model")
        values = {}
        total = sum(math.prod(leaf.shape) * shapes[leaf.path].dtype.itemsize for leaf in layout.leaves)
        with progress_bar(total, f"loading {path.name}", progress) as bar:
            for leaf in layout.leaves:
                target = shapes[leaf.path]
                values[leaf.path] = _load_leaf(files, leaf, target.dtype, shardings[leaf.path])
                bar.update(math.prod(leaf.shape) * target.dtype.itemsize)
    return cfg, build_model(graphdef, abstract_state, traverse_util.unflatten_dict(values))


class _TensorFiles(contextlib.ExitStack):
    """The open safetensors files of a folder: tensor headers up front, slices read on demand."""

    def __init__(self, directory: Path):
        super().__init__()
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.dtypes: dict[str, str] = {}
        self._handles = {}
        try:
            for file in self._files(directory):
                self._open(file)
        except BaseException:
            self.close()
            raise

    @staticmethod
    def _files(directory: Path) -> list[Path]:
        index = directory / INDEX
        if not index.is_file():
            files = sorted(directory.glob("*.safetensors"))
            if not files:
                raise CheckpointError(f"{directory} holds no *.safetensors files")
            return files
        weight_map = _read_json(index).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise CheckpointError(f"{index} has no weight_map")
        files = [directory / name for name in sorted(set(weight_map.values()))]
        if missing := [f.name for f in files if not f.is_file()]:
            raise CheckpointError(f"{index} lists files that do not exist: {', '.join(missing)}")
        return files

    def _open(self, file: Path) -> None:
        handle = self.enter_context(safe_open(file, framework="numpy"))
        for key in handle.keys():
            if key in self._handles:
                raise CheckpointError(f"tensor {key} is in more than one file of {file.parent} (again in {file.name})")
            info = handle.get_slice(key)
            self.shapes[key], self.dtypes[key] = tuple(info.get_shape()), info.get_dtype()
            self._handles[key] = handle

    def read(self, key: str, index: tuple = ()) -> np.ndarray:
        return self._handles[key].get_slice(key)[index] if index else self._handles[key].get_tensor(key)


def _check_tensors(files: _TensorFiles, layout: Layout, cfg: ModelConfig, path: Path) -> None:
    """Fail naming every missing, unexpected, mis-shaped or non-float tensor (a few of each) before loading any."""
    problems = []
    extra = set(files.shapes) - set(layout.expected)
    if cfg.tie_word_embeddings and "lm_head.weight" in extra:
        # Tied checkpoints may still carry a copy of the embedding as the head; anything else would be silently lost.
        extra.discard("lm_head.weight")
        if files.shapes["lm_head.weight"] != files.shapes.get("model.embed_tokens.weight") or not np.array_equal(
            files.read("lm_head.weight"), files.read("model.embed_tokens.weight")
        ):
            problems.append("lm_head.weight differs from model.embed_tokens.weight but config.json ties them")
    for key, shape in layout.expected.items():
        if key not in files.shapes:
            problems.append(f"missing tensor {key} (expected shape {list(shape)})")
        elif files.shapes[key] != shape:
            problems.append(f"tensor {key} has shape {list(files.shapes[key])}, expected {list(shape)}")
        elif files.dtypes[key] not in _FLOAT_DTYPES:
            problems.append(f"tensor {key} has dtype {files.dtypes[key]}, expected a float type")
    problems += [f"unexpected tensor {key} {list(files.shapes[key])}" for key in sorted(extra)]
    if problems:
        more = f"; and {len(problems) - _MAX_LISTED} more" if len(problems) > _MAX_LISTED else ""
        raise CheckpointError(
            f"{path} does not match its config.json: " + "; ".join(problems[:_MAX_LISTED]) + more
        )


def _check_layout_covers(layout: Layout, shapes: dict, context: str) -> None:
    """Fail unless the layout table and the model have the same parameters with the same shapes."""
    table = {leaf.path: tuple(leaf.shape) for leaf in layout.leaves}
    model = {path: tuple(s.shape) for path, s in shapes.items()}
    problems = [
        f"{'/'.join(map(str, p))}: expected {list(table[p]) if p in table else 'no such parameter'}, "
        f"model has {list(model[p]) if p in model else 'none'}"
        for p in sorted(set(table) | set(model), key=str)
        if table.get(p) != model.get(p)
    ]
    if problems:
        raise CheckpointError(f"{context}: " + "; ".join(problems[:_MAX_LISTED]))


def _load_leaf(files: _TensorFiles, leaf: Leaf, dtype: np.dtype, sharding) -> jax.Array:
    shards: dict[tuple, np.ndarray] = {}  # replicas of one shard are read once

    def shard(index: tuple[slice, ...]) -> np.ndarray:
        ranges = tuple(range(*s.indices(n)) for s, n in zip(index, leaf.shape))
        bounds = tuple((r.start, r.stop) for r in ranges)
        if bounds not in shards:
            shards[bounds] = _read_shard(files, leaf, ranges, dtype)
        return shards[bounds]

    return jax.make_array_from_callback(leaf.shape, sharding, shard, dtype=dtype)


def _read_shard(files: _TensorFiles, leaf: Leaf, ranges: tuple[range, ...], dtype: np.dtype) -> np.ndarray:
    """The part `ranges` of a leaf: one HF block per lead index, each read only as far as the slice needs."""
    lead, block = ranges[: len(leaf.lead)], ranges[len(leaf.lead) :]
    out = np.empty([len(r) for r in ranges], dtype)
    for pos, idx in zip(itertools.product(*map(range, map(len, lead))), itertools.product(*lead)):
        out[pos] = _read_block(files, leaf, leaf.slab(*idx), block)
    return out


def _read_block(files: _TensorFiles, leaf: Leaf, slab: Slab, block: tuple[range, ...]) -> np.ndarray:
    n_rows, n_cols = len(leaf.row_dims), len(leaf.col_dims)
    row_ranges, col_ranges = (block[n_cols:], block[:n_cols]) if leaf.transpose else (block[:n_rows], block[n_rows:])
    row_flat, row_local, row_shape = _hull(row_ranges, leaf.row_dims, slab.row_offset)
    col_flat, col_local, col_shape = _hull(col_ranges, leaf.col_dims, 0)
    data = files.read(slab.key, slab.index + row_flat + col_flat)
    data = data.reshape(row_shape + col_shape)[row_local + col_local]
    if leaf.transpose:
        data = data.transpose([*range(n_rows, n_rows + n_cols), *range(n_rows)])
    return data


def _hull(ranges: tuple[range, ...], dims: tuple[int, ...], offset: int):
    """Map ranges over the factors `dims` of one HF axis to the contiguous run of that axis covering them (from
    the first factor's range), plus the local slices still to apply once the run is reshaped to `dims`."""
    if not dims:
        return (), (), ()
    inner = math.prod(dims[1:])
    first = ranges[0]
    flat = slice(offset + first.start * inner, offset + first.stop * inner)
    local = (slice(None),) + tuple(slice(r.start, r.stop) for r in ranges[1:])
    return (flat,), local, (len(first),) + tuple(dims[1:])


# ---- export ----------------------------------------------------------------------------------------------------


def save_hf(
    model: Qwen3,
    cfg: ModelConfig,
    path: str | Path,
    *,
    dtype: str | None = None,
    max_shard_bytes: int = 5 * 2**30,
    overwrite: bool = False,
    progress: bool | None = None,
) -> Path:
    """Write `model` as an HF folder transformers loads: `config.json` plus `model.safetensors`, or numbered shards of
    at most `max_shard_bytes` with `model.safetensors.index.json`. Experts are written per expert, as
    `save_pretrained` does. `dtype` (default: `cfg.param_dtype`) is the stored weight type.

    Refuses a non-empty `path` unless `overwrite`, which replaces only config.json and safetensors files there.
    """
    if max_shard_bytes <= 0:
        raise CheckpointError(f"max_shard_bytes must be positive, got {max_shard_bytes}")
    layout = hf_layout(cfg)
    params = traverse_util.flatten_dict(nnx.to_pure_dict(nnx.state(model, nnx.Param)))
    _check_layout_covers(layout, params, "the model's parameters do not match cfg")
    out_dtype = float_dtype(dtype or cfg.param_dtype)
    path = prepare_output_dir(path, overwrite, owned=(CONFIG, INDEX, "*.safetensors", "*.safetensors.tmp"))
    total = sum(math.prod(leaf.shape) for leaf in layout.leaves) * out_dtype.itemsize
    with progress_bar(total, f"writing {path.name}", progress) as bar:
        writer = _ShardWriter(path, max_shard_bytes)
        for leaf in layout.leaves:
            for key, tensor in _hf_tensors(leaf, params[leaf.path], out_dtype):
                writer.add(key, tensor)
                bar.update(tensor.nbytes)
        writer.finish()
    (path / CONFIG).write_text(json.dumps(config_to_hf(cfg, out_dtype.name), indent=2) + "\n")
    return path


def _hf_tensors(leaf: Leaf, array: jax.Array, dtype: np.dtype):
    """(HF key, tensor) for every block of a leaf, fetching one layer at a time to bound host memory."""
    layers = range(leaf.lead[0]) if leaf.lead else [None]
    for layer in layers:
        host = np.asarray(array if layer is None else array[layer]).astype(dtype)
        for rest in itertools.product(*map(range, leaf.lead[1:])):
            idx = () if layer is None else (layer, *rest)
            block = host[rest]
            if leaf.transpose:
                n_cols = len(leaf.col_dims)
                block = block.transpose([*range(n_cols, block.ndim), *range(n_cols)])
            yield leaf.slab(*idx).key, np.ascontiguousarray(block.reshape(leaf.hf_shape))


class _ShardWriter:
    """Fills shards up to a byte budget under temporary names; `finish` gives them their final `-of-N` names."""

    def __init__(self, directory: Path, max_shard_bytes: int):
        self.directory, self.max_bytes = directory, max_shard_bytes
        self.pending: dict[str, np.ndarray] = {}
        self.pending_bytes = 0
        self.shards: list[tuple[Path, list[str]]] = []
        self.total_bytes = 0

    def add(self, key: str, tensor: np.ndarray) -> None:
        if self.pending and self.pending_bytes + tensor.nbytes > self.max_bytes:
            self._flush()
        self.pending[key] = tensor
        self.pending_bytes += tensor.nbytes
        self.total_bytes += tensor.nbytes

    def _flush(self) -> None:
        tmp = self.directory / f"model-{len(self.shards) + 1:05d}.safetensors.tmp"
        save_file(self.pending, tmp, metadata={"format": "pt"})  # transformers requires the "pt" format tag
        self.shards.append((tmp, list(self.pending)))
        self.pending, self.pending_bytes = {}, 0

    def finish(self) -> None:
        self._flush()
        n = len(self.shards)
        weight_map = {}
        for i, (tmp, keys) in enumerate(self.shards, 1):
            name = "model.safetensors" if n == 1 else f"model-{i:05d}-of-{n:05d}.safetensors"
            tmp.rename(self.directory / name)
            weight_map.update(dict.fromkeys(keys, name))
        if n > 1:
            index = {"metadata": {"total_size": self.total_bytes}, "weight_map": weight_map}
            (self.directory / INDEX).write_text(json.dumps(index, indent=2) + "\n")

"""Any checkpoint the project produces or reads, loaded for evaluation: a run directory (its newest
`checkpoints/<step>`, or one step directory, with the architecture and tokenizer of the run's `config.json`), a
native checkpoint (`model_config.json` + `params/`) or a Hugging Face folder (`config.json` + `*.safetensors`).

The checkpoint's fingerprint (every file's relative path, size and modification time, and the tokenizer's) keys the
result cache: a checkpoint rewritten in place is a new checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import pathlib

import ml_collections
from flax import nnx

from qwen3jax.convert import load_hf, load_native
from qwen3jax.convert.common import build_model
from qwen3jax.data.tokenizer import Tokenizer, load_tokenizer
from qwen3jax.model import ModelConfig, Qwen3
from qwen3jax.sample.budget import ThinkingTokens
from qwen3jax.sample.cli import CHAT_STOP_TOKENS, ChatModel, UsageError
from qwen3jax.train.checkpoint import load_params, resolve_init_checkpoint
from qwen3jax.train.loop import configured_tokenizer_for


def checkpoint_kind(path: pathlib.Path) -> str:
    """"run", "native" or "hf"; a UsageError naming what was expected otherwise."""
    if not path.is_dir():
        raise UsageError(f"checkpoint {path} is not a directory")
    if (path / "model_config.json").is_file() and (path / "params").is_dir():
        return "native"
    if (path / "params").is_dir() and (path.parent.parent / "config.json").is_file():
        return "run"  # one step directory of a run
    if (path / "config.json").is_file():
        return "run" if "model" in json.loads((path / "config.json").read_text()) else "hf"
    raise UsageError(
        f"{path} is neither a run directory (config.json + checkpoints/), a native checkpoint (model_config.json + "
        "params/) nor a Hugging Face folder (config.json + *.safetensors)"
    )


def _load_run(path: pathlib.Path) -> tuple[Qwen3, Tokenizer, pathlib.Path]:
    try:
        step_dir = resolve_init_checkpoint(path)
    except FileNotFoundError as e:
        raise UsageError(str(e).removeprefix("init_from: ")) from None
    run_dir = step_dir.parent.parent
    config = ml_collections.ConfigDict(json.loads((run_dir / "config.json").read_text()))
    cfg = ModelConfig.from_dict(config.model.to_dict())
    graphdef, abstract_state = nnx.split(nnx.eval_shape(lambda: Qwen3(cfg, rngs=nnx.Rngs(0))), nnx.Param)
    try:
        values = load_params(step_dir, nnx.to_pure_dict(abstract_state))
    except ValueError as e:
        raise UsageError(str(e)) from None
    return build_model(graphdef, abstract_state, values), configured_tokenizer_for(config), step_dir


def load_checkpoint(path: str | pathlib.Path, tokenizer: str | None = None) -> tuple[ChatModel, str]:
    """The model and tokenizer of any checkpoint, and its fingerprint."""
    path = pathlib.Path(path)
    kind = checkpoint_kind(path)
    try:
        run_tokenizer = None
        if kind == "run":
            model, run_tokenizer, path = _load_run(path)
        else:
            model = (load_native(path) if kind == "native" else load_hf(path))[1]
        if tokenizer:
            tok = load_tokenizer(tokenizer)
        elif run_tokenizer is not None:
            tok = run_tokenizer
        elif (path / "tokenizer.json").is_file():
            tok = load_tokenizer(path / "tokenizer.json")
        else:
            raise UsageError(f"no tokenizer: {path} has no tokenizer.json; pass --tokenizer PATH")
        if tok.vocab_size > model.config.vocab_size:
            raise UsageError(
                f"checkpoint/tokenizer mismatch: the tokenizer has {tok.vocab_size} tokens but the model only "
                f"{model.config.vocab_size}"
            )
        think = ThinkingTokens.from_tokenizer(tok)
    except ValueError as e:  # an unreadable tokenizer, or one without the think tokens
        raise UsageError(str(e)) from None
    chat = ChatModel(model, tok, think, tuple(tok.token_to_id(t) for t in CHAT_STOP_TOKENS))
    return chat, fingerprint([path] + ([pathlib.Path(tokenizer)] if tokenizer else []))


def fingerprint(paths: list[pathlib.Path]) -> str:
    """A hash of the relative path, size and modification time of every file under `paths`."""
    entries = []
    for root in paths:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for f in files:
            stat = f.stat()
            entries.append([str(f.relative_to(root.parent)), stat.st_size, stat.st_mtime_ns])
    return hashlib.sha256(json.dumps(entries).encode()).hexdigest()

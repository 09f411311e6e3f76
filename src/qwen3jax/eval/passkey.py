"""Passkey retrieval (needle in a haystack; Mohtashami & Jaggi 2023, the long-context check of the YaRN and DCA
papers): a random 5-digit key is stated once at a random depth of a long filler text and asked for at the end.

A model is scored at several lengths with each way of running it past its trained length (`METHODS`): plain RoPE,
YaRN (static factor, Qwen3's setting) and YaRN + Dual Chunk Attention (model/dca.py). A sample counts as retrieved
when greedy decoding reproduces every token of the key, computed in one teacher-forced forward pass (greedy decoding
emits the key exactly when each of its tokens is the argmax after the ones before it).

  python -m qwen3jax.eval.passkey data --ckpt runs/pretrain_s3 --out runs/passkey_data
      JSONL documents at lengths up to the run's trained length, for `experiments/passkey_finetune.py`
  python -m qwen3jax.eval.passkey eval --ckpt runs/passkey_finetune --lengths 1024,2048,4096
      the accuracy table (Markdown) and a JSON of every cell (`--out`)

`--ckpt` is a run directory (its config.json names the tokenizer and the trained length `seq_len`) or a native
checkpoint directory (model_config.json; then `--tokenizer` and `--trained-length` are needed).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import jax.numpy as jnp
import numpy as np
from flax import nnx

from qwen3jax.data.tokenizer import Tokenizer

INTRO = (
    "There is an important info hidden inside a lot of irrelevant text. Find it and memorize it. "
    "I will quiz you about the important information there.\n"
)
FILLER = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.\n"
NEEDLE = "The pass key is {key}. Remember it. {key} is the pass key.\n"
QUESTION = "What is the pass key? The pass key is"

METHODS = ("rope", "yarn", "yarn_dca", "dca")


@dataclasses.dataclass(frozen=True)
class Sample:
    text: str  # the whole document: prompt and answer
    prompt: list[int]  # ends with the question
    answer: list[int]  # the key's tokens
    key: str
    depth: float  # where the needle sits, as a fraction of the filler


def make_sample(tokenizer: Tokenizer, length: int, rng: np.random.Generator, depth: float | None = None) -> Sample:
    """A document of at most `length` tokens (prompt + answer) and at least one filler sentence shorter."""
    key = str(rng.integers(10_000, 100_000))
    depth = float(rng.uniform()) if depth is None else depth
    unit = len(tokenizer.encode(FILLER * 2)) - len(tokenizer.encode(FILLER))  # one more sentence, in context
    fixed = len(tokenizer.encode(INTRO + NEEDLE.format(key=key) + QUESTION + " " + key))
    repeats = max(0, (length - fixed) // unit + 1)
    while True:  # tokens do not add up exactly across sentence joins: shrink until it fits
        before = round(repeats * depth)
        text = INTRO + FILLER * before + NEEDLE.format(key=key) + FILLER * (repeats - before) + QUESTION
        prompt = tokenizer.encode(text)
        full = tokenizer.encode(text + " " + key)
        if len(full) <= length or repeats == 0:
            break
        repeats -= 1
    if len(full) > length:
        raise ValueError(f"length {length} is too short for a passkey document ({len(full)} tokens without filler)")
    if full[: len(prompt)] != prompt:
        raise ValueError("the tokenizer merges the question with the key; passkey prompts need a clean boundary")
    return Sample(text + " " + key, prompt, full[len(prompt) :], key, depth)


def training_documents(tokenizer: Tokenizer, max_length: int, count: int, seed: int, short_share: float = 0.0,
                       short_length: int | None = None) -> list[str]:
    """Texts (prompt + answer), needles at uniformly random depths: a `short_share` of them of uniformly random
    lengths below `short_length` (default max_length / 4; at least a document without filler), the others in
    [max_length / 8, max_length - 1] tokens (one left for the end-of-document token).

    Short documents are the curriculum that makes retrieval learnable at tiny scale: many needles per packed row,
    copied over short distances first (with long documents only, 300 steps learned no copying at all)."""
    rng = np.random.default_rng(seed)
    bare = len(tokenizer.encode(INTRO + NEEDLE.format(key=99999) + QUESTION + " 99999"))
    shortest = max(max_length // 8, bare)
    short_length = max_length // 4 if short_length is None else short_length
    if shortest >= max_length:
        raise ValueError(f"max_length {max_length} is too short for passkey documents (at least {shortest + 1})")
    if not 0.0 <= short_share <= 1.0:
        raise ValueError(f"short_share {short_share} is not a share in [0, 1]")
    if short_share and not bare < short_length <= max_length:
        raise ValueError(f"short_length {short_length} must be in ({bare}, {max_length}] (a document without filler "
                         f"has {bare} tokens)")  # fmt: skip
    docs = []
    for _ in range(count):
        low, high = (bare, short_length) if rng.uniform() < short_share else (shortest, max_length)
        docs.append(make_sample(tokenizer, int(rng.integers(low, high)), rng).text)
    return docs


def method_config(cfg, method: str, trained_length: int, length: int, yarn_factor: float, local_size: int):
    """The model config of `method` for documents of `length` tokens."""
    from qwen3jax.model.config import DualChunk, YarnScaling

    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")
    cfg = cfg.replace(
        rope_scaling=None, dual_chunk=None, max_position_embeddings=max(cfg.max_position_embeddings, length)
    )
    if method.startswith("yarn"):
        cfg = cfg.replace(
            rope_scaling=YarnScaling(factor=yarn_factor, original_max_position_embeddings=trained_length)
        )
    if method.endswith("dca"):
        cfg = cfg.replace(dual_chunk=DualChunk(chunk_size=trained_length, local_size=local_size))
    return cfg


@nnx.jit
def _answer_argmax(model, tokens_BT, segments_BT):
    return jnp.argmax(model(tokens_BT, segment_ids=segments_BT), axis=-1)


def retrieved(model, samples: Sequence[Sample], width: int, batch_size: int) -> list[bool]:
    """Whether greedy decoding reproduces each sample's key (one teacher-forced pass per batch, rows right-padded
    to `width` with padding segments that no real token attends to)."""
    hits = []
    for start in range(0, len(samples), batch_size):
        chunk = samples[start : start + batch_size]
        tokens = np.zeros((batch_size, width), np.int32)
        segments = np.zeros((batch_size, width), np.int32)
        for row, s in enumerate(chunk):
            seq = s.prompt + s.answer[:-1]
            tokens[row, : len(seq)], segments[row, : len(seq)] = seq, 1
        predicted = np.asarray(_answer_argmax(model, jnp.asarray(tokens), jnp.asarray(segments)))
        for row, s in enumerate(chunk):
            first = len(s.prompt) - 1  # the logits after the prompt predict the key's first token
            hits.append(predicted[row, first : first + len(s.answer)].tolist() == s.answer)
    return hits


def evaluate(model, tokenizer: Tokenizer, *, trained_length: int, lengths: Sequence[int], methods: Sequence[str],
             samples: int, seed: int, yarn_factor: float, local_size: int, batch_size: int) -> list[dict]:
    """One record per (method, length): accuracy over `samples` documents (the same documents for every method,
    needles at evenly spread depths)."""
    base_cfg = model.config
    graphdef, state = nnx.split(model)
    results = []
    for length in lengths:
        rng = np.random.default_rng([seed, length])
        docs = [make_sample(tokenizer, length, rng, depth=(i + 0.5) / samples) for i in range(samples)]
        for method in methods:
            cfg = method_config(base_cfg, method, trained_length, length, yarn_factor, local_size)
            variant = nnx.merge(graphdef, state)
            variant.config = cfg
            hits = retrieved(variant, docs, length, batch_size)
            results.append(
                {
                    "method": method, "length": length, "times_trained": length / trained_length,
                    "accuracy": float(np.mean(hits)), "n": len(hits), "hits": hits,
                    "depths": [d.depth for d in docs], "yarn_factor": yarn_factor if "yarn" in method else None,
                    "dca": dataclasses.asdict(cfg.dual_chunk) if cfg.dual_chunk else None,
                }
            )
            print(f"{method:>9} @ {length:>6}: {np.mean(hits):.2f} ({sum(hits)}/{len(hits)})", file=sys.stderr)
    return results


def markdown_table(results: list[dict], trained_length: int) -> str:
    lengths = sorted({r["length"] for r in results})
    methods = list(dict.fromkeys(r["method"] for r in results))
    cell = {(r["method"], r["length"]): r for r in results}
    header = "| method | " + " | ".join(f"{n} ({n / trained_length:g}x)" for n in lengths) + " |"
    lines = [header, "|---" * (len(lengths) + 1) + "|"]
    for m in methods:
        row = [f"{cell[m, n]['accuracy']:.2f} ({sum(cell[m, n]['hits'])}/{cell[m, n]['n']})" for n in lengths]
        lines.append(f"| {m} | " + " | ".join(row) + " |")
    return "\n".join(lines)


# ---- loading ---------------------------------------------------------------------------------------------------


def _run_config(folder: Path):
    """A run directory's config snapshot, or None for a native checkpoint; a UsageError for anything else."""
    import ml_collections

    if (folder / "model_config.json").is_file():
        return None
    if not (folder / "config.json").is_file():
        raise UsageError(f"{folder} is neither a run directory (config.json) nor a native checkpoint")
    return ml_collections.ConfigDict(json.loads((folder / "config.json").read_text()))


def load_tokenizer_and_length(ckpt: str, tokenizer_path: str | None, trained_length: int | None):
    """(tokenizer, trained length): the given ones, else the run directory's (its data tokenizer and seq_len)."""
    from qwen3jax.data.tokenizer import load_tokenizer
    from qwen3jax.train.loop import configured_tokenizer_for

    config = _run_config(Path(ckpt))
    if config is None and (tokenizer_path is None or trained_length is None):
        raise UsageError("a native checkpoint needs --tokenizer and --trained-length")
    tokenizer = load_tokenizer(tokenizer_path) if tokenizer_path else configured_tokenizer_for(config)
    return tokenizer, trained_length or int(config.seq_len)


def load_model(ckpt: str):
    """The model of a run directory (its newest checkpoint) or of a native checkpoint."""
    from qwen3jax.convert import load_native
    from qwen3jax.model import ModelConfig, Qwen3
    from qwen3jax.train.checkpoint import load_params

    config = _run_config(Path(ckpt))
    if config is None:
        return load_native(ckpt)[1]
    cfg = ModelConfig.from_dict(config.model.to_dict())
    graphdef, abstract = nnx.split(nnx.eval_shape(lambda: Qwen3(cfg, rngs=nnx.Rngs(0))))
    try:
        params = load_params(ckpt, nnx.to_pure_dict(abstract))
    except (FileNotFoundError, ValueError) as e:
        raise UsageError(str(e).removeprefix("init_from: ")) from None
    nnx.replace_by_pure_dict(abstract, params)
    return nnx.merge(graphdef, abstract)


class UsageError(Exception):
    """A problem with the command line or its inputs, reported as one line."""


def _lengths(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",")]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of positive token counts")
    return values


def _methods(text: str) -> list[str]:
    values = text.split(",")
    if bad := [m for m in values if m not in METHODS]:
        raise argparse.ArgumentTypeError(f"unknown method(s) {bad}; expected some of {','.join(METHODS)}")
    return values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m qwen3jax.eval.passkey", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("data", "eval"):
        p = sub.add_parser(name)
        p.add_argument("--ckpt", required=True, help="run directory or native checkpoint")
        p.add_argument("--tokenizer", help="tokenizer file (default: the run's)")
        p.add_argument("--trained-length", type=int, help="default: the run's seq_len")
        p.add_argument("--seed", type=int, default=0)
    data = sub.choices["data"]
    data.add_argument("--out", required=True, help="directory for train.jsonl and eval.jsonl (must not exist)")
    data.add_argument("--count", type=int, default=8000, help="training documents")
    data.add_argument("--short-share", type=float, default=0.75,
                      help="share of short documents (below --short-length tokens): many short-range needles first")
    data.add_argument("--short-length", type=int, help="default: a quarter of the trained length")
    ev = sub.choices["eval"]
    ev.add_argument("--lengths", type=_lengths, help="document lengths in tokens (default: 1x, 2x, 4x trained)")
    ev.add_argument("--methods", type=_methods, default=["rope", "yarn", "yarn_dca"])
    ev.add_argument("--samples", type=int, default=20, help="documents per length")
    ev.add_argument("--yarn-factor", type=float, default=4.0)
    ev.add_argument("--local-size", type=int, help="DCA local window (default: trained length / 8)")
    ev.add_argument("--batch-size", type=int, default=4)
    ev.add_argument("--out", help="JSON file for every cell's result")
    args = parser.parse_args(argv)
    try:
        if args.command == "data":
            _write_data(args)
        else:
            _evaluate(args)
    except (UsageError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def _write_data(args) -> None:
    out = Path(args.out)
    if out.exists():
        raise UsageError(f"{out} exists; passkey data is never overwritten (remove it or pick another --out)")
    tokenizer, trained = load_tokenizer_and_length(args.ckpt, args.tokenizer, args.trained_length)
    out.mkdir(parents=True)
    for split, count, seed in (("train", args.count, args.seed), ("eval", max(1, args.count // 20), args.seed + 1)):
        with open(out / f"{split}.jsonl", "w") as f:
            for text in training_documents(tokenizer, trained, count, seed, args.short_share, args.short_length):
                f.write(json.dumps({"text": text}) + "\n")
    print(f"wrote {args.count} training documents of up to {trained} tokens ({args.short_share:.0%} shorter than "
          f"{args.short_length or trained // 4}) to {out}", file=sys.stderr)


def _evaluate(args) -> None:
    tokenizer, trained = load_tokenizer_and_length(args.ckpt, args.tokenizer, args.trained_length)
    model = load_model(args.ckpt)
    lengths = args.lengths or [trained, 2 * trained, 4 * trained]
    local = args.local_size if args.local_size is not None else trained // 8
    results = evaluate(
        model, tokenizer, trained_length=trained, lengths=lengths, methods=args.methods, samples=args.samples,
        seed=args.seed, yarn_factor=args.yarn_factor, local_size=local, batch_size=args.batch_size,
    )
    print(markdown_table(results, trained))
    if args.out:
        Path(args.out).write_text(json.dumps({"ckpt": args.ckpt, "trained_length": trained, "results": results}, indent=1))


if __name__ == "__main__":
    sys.exit(main())

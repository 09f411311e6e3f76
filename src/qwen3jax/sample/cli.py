"""What the `generate` and `chat_repl` commands share: options, checkpoint and tokenizer loading, SPEC §4 eval
decoding defaults, one assistant turn, splitting a reply into thinking and answer, and one-line error reporting."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from qwen3jax.chat import encode_prompt
from qwen3jax.convert import CheckpointError, load_hf, load_native, native
from qwen3jax.data.tokenizer import Tokenizer, load_tokenizer
from qwen3jax.model import Qwen3
from qwen3jax.sample.budget import THINKING, ThinkingTokens
from qwen3jax.sample.engine import StreamFn, generate
from qwen3jax.sample.result import GenerationResult

# SPEC §4 eval decoding, by thinking mode.
EVAL_DECODING = {
    True: dict(temperature=0.6, top_p=0.95, top_k=20),
    False: dict(temperature=0.7, top_p=0.8, top_k=20),
}
CHAT_STOP_TOKENS = ("<|im_end|>", "<|endoftext|>")


class UsageError(Exception):
    """A problem with the command line or its inputs, reported as one line."""


def add_model_args(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--ckpt", help="native checkpoint directory (model_config.json + params/), or a training run "
                        "directory (its newest checkpoint) or one of its checkpoints/<step> directories")
    source.add_argument("--hf", help="Hugging Face checkpoint folder (config.json + *.safetensors)")
    parser.add_argument(
        "--tokenizer", help="tokenizer.json or SentencePiece .model; default: the checkpoint's tokenizer.json (a "
        "training run's: the tokenizer it trained with)"
    )


def checked(kind: type, ok: Callable, requirement: str) -> Callable[[str], object]:
    """An argparse `type` that also checks the value's range, so bad values fail at parse time with one message."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not ok(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not {requirement}")
        return value

    return parse


POSITIVE_INT = checked(int, lambda v: v >= 1, "a positive integer")


def add_decoding_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-think", action="store_true", help="non-thinking mode (empty think block)")
    parser.add_argument(
        "--budget", type=checked(int, lambda v: v >= 0, "an integer >= 0"), help="thinking budget in tokens"
    )
    parser.add_argument(
        "--temperature", type=checked(float, lambda v: math.isfinite(v) and v >= 0, "a number >= 0"),
        help="default: 0.6 thinking / 0.7 non-thinking (0: greedy)",
    )
    parser.add_argument(
        "--top-p", type=checked(float, lambda v: 0 < v <= 1, "in (0, 1]"),
        help="default: 0.95 thinking / 0.8 non-thinking",
    )
    parser.add_argument("--top-k", type=POSITIVE_INT, help="default: 20")
    parser.add_argument("--presence-penalty", type=checked(float, math.isfinite, "a finite number"), default=0.0)
    parser.add_argument("--max-new-tokens", type=POSITIVE_INT, default=512)
    parser.add_argument("--seed", type=checked(int, lambda v: 0 <= v < 2**63, "an integer in [0, 2^63)"), default=0)


def run(command: Callable[[], None]) -> int:
    """Run a command, turning the errors a user can fix (bad paths, bad checkpoints, bad values) into one line."""
    try:
        command()
    except (UsageError, CheckpointError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


@dataclasses.dataclass(frozen=True)
class ChatModel:
    """A loaded model with its tokenizer and the special ids a chat turn needs."""

    model: Qwen3
    tokenizer: Tokenizer
    think: ThinkingTokens
    stop_ids: tuple[int, ...]  # the end of an assistant turn

    def encode_prompt(self, messages: list[dict], thinking: bool) -> list[int]:
        return encode_prompt(self.tokenizer, messages, enable_thinking=thinking)

    def reply(
        self, prompt_ids: Sequence[int], args: argparse.Namespace, thinking: bool, *, n: int = 1,
        stream: StreamFn | None = None,
    ) -> GenerationResult:
        """The assistant's reply(s) to a rendered chat prompt, ending at the end of the turn."""
        self.check_fits(prompt_ids, args)
        return generate(
            self.model, [list(prompt_ids)], n=n, stop_ids=self.stop_ids, thinking_budget=args.budget,
            thinking=self.think, stream=stream, vocab_limit=self.tokenizer.vocab_size,
            **decoding_kwargs(args, thinking),
        )

    def check_fits(self, prompt_ids: Sequence[int], args: argparse.Namespace) -> None:
        """A `UsageError` if the prompt leaves no room for `--max-new-tokens` in the model's context."""
        context = self.model.config.max_position_embeddings
        if len(prompt_ids) + args.max_new_tokens > context:
            raise UsageError(
                f"the prompt is {len(prompt_ids)} tokens; with --max-new-tokens {args.max_new_tokens} it exceeds the "
                f"model's context of {context} tokens"
            )

    def split_thinking(self, ids: Sequence[int], prompt_ids: Sequence[int]) -> tuple[list[int] | None, list[int]]:
        """(thinking ids, or None when there was no think block; answer ids) of one generated reply."""
        ids = list(ids)
        inside = self.think.prompt_phase(prompt_ids) == THINKING
        start = 0
        if not inside and self.think.start_id in ids:
            start, inside = ids.index(self.think.start_id) + 1, True
        if not inside:
            return None, ids
        if self.think.end_id not in ids[start:]:
            return ids[start:], []
        end = ids.index(self.think.end_id, start)
        return ids[start:end], ids[end + 1 :]

    def text(self, ids: Sequence[int]) -> str:
        """Decoded text without a final stop token."""
        ids = list(ids)
        if ids and ids[-1] in self.stop_ids:
            ids = ids[:-1]
        return self.tokenizer.decode(ids)


def load(args: argparse.Namespace) -> ChatModel:
    """The model of `--ckpt` / `--hf` and the tokenizer of `--tokenizer` or the checkpoint folder."""
    folder = Path(args.ckpt or args.hf)
    if not folder.is_dir():
        raise UsageError(f"checkpoint directory {folder} does not exist")
    run = None
    if args.ckpt and not (folder / native.CONFIG).is_file():  # a training run or one of its step directories
        run = native.training_run_of(folder)
        print(f"loading {native.native_params_dir(folder).parent} of the training run {run}", file=sys.stderr)
    tokenizer_path = Path(args.tokenizer) if args.tokenizer else folder / "tokenizer.json"
    try:
        if run is not None and not args.tokenizer:
            tokenizer = run_tokenizer(run)
        elif not tokenizer_path.is_file() and not args.tokenizer:
            raise UsageError(f"no tokenizer: {folder} has no tokenizer.json; pass --tokenizer PATH")
        else:
            tokenizer = load_tokenizer(tokenizer_path)
    except ValueError as e:  # an unrecognised tokenizer file
        raise UsageError(str(e)) from None
    cfg, model = load_native(folder) if args.ckpt else load_hf(folder)
    if tokenizer.vocab_size > cfg.vocab_size:
        raise UsageError(f"the tokenizer has {tokenizer.vocab_size} tokens but the model only {cfg.vocab_size}")
    return chat_model(model, tokenizer)


def chat_model(model: Qwen3, tokenizer: Tokenizer) -> ChatModel:
    """A loaded model and its tokenizer, with the chat's stop and thinking ids."""
    stop_ids = tuple(tokenizer.token_to_id(t) for t in CHAT_STOP_TOKENS)
    return ChatModel(model, tokenizer, ThinkingTokens.from_tokenizer(tokenizer), stop_ids)


def run_tokenizer(run: Path) -> Tokenizer:
    """The tokenizer a training run used: the one its data config names (as the run loop builds it)."""
    from qwen3jax.data.config import parse_data_config
    from qwen3jax.data.pipeline import configured_tokenizer

    return configured_tokenizer(parse_data_config(json.loads((run / "config.json").read_text())["data"]))


def decoding_kwargs(args: argparse.Namespace, thinking: bool) -> dict:
    """Sampling parameters: the command line's, else SPEC §4's eval defaults for the mode."""
    chosen = {"temperature": args.temperature, "top_p": args.top_p, "top_k": args.top_k}
    kwargs = {k: EVAL_DECODING[thinking][k] if v is None else v for k, v in chosen.items()}
    return dict(kwargs, presence_penalty=args.presence_penalty, max_new_tokens=args.max_new_tokens, seed=args.seed)

"""`python -m qwen3jax.chat_repl --ckpt DIR | --hf DIR`: multi-turn chat on stdin/stdout, replies streamed token
by token as they are decoded.

The history is re-rendered through the chat template every turn (earlier turns lose their reasoning, as the
template prescribes). Thinking mode: a line that is exactly `/think` or `/no_think` switches it for the following
turns; the same flags inside a message (the `--system` one included) are Qwen3's soft switches and also switch it
from that message on (the last switch wins, typed alone or inline). A message that no longer fits the model's
context with `--max-new-tokens` is refused with a note and the session goes on. `/exit` or end of input quits.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from qwen3jax.chat import resolve_thinking
from qwen3jax.sample import cli


class _Printer:
    """Prints row 0's tokens as they are decoded. Text is re-decoded from the start of the reply each time, so a
    character split across byte-level tokens appears once complete. One instance serves the whole session: the
    compiled decode loop is keyed on this callback."""

    def __init__(self, chat: cli.ChatModel):
        self.chat = chat
        self.reset()

    def reset(self) -> None:
        self.ids: list[int] = []
        self.shown = 0

    def __call__(self, tokens: np.ndarray, emitted: np.ndarray) -> None:
        if not emitted[0] or int(tokens[0]) in self.chat.stop_ids:
            return
        self.ids.append(int(tokens[0]))
        self._show(final=False)

    def finish(self) -> None:
        self._show(final=True)

    def _show(self, final: bool) -> None:
        text = self.chat.tokenizer.decode(self.ids)
        if final or not text.endswith("\ufffd"):  # an incomplete UTF-8 sequence: wait for its next byte
            sys.stdout.write(text[self.shown :])
            sys.stdout.flush()
            self.shown = len(text)


def _repl(args: argparse.Namespace) -> None:
    chat = cli.load(args)
    printer = _Printer(chat)
    messages = [{"role": "system", "content": args.system}] if args.system else []
    thinking = resolve_thinking(messages, enable_thinking=not args.no_think) if messages else not args.no_think
    interactive = sys.stdin.isatty()
    print(f"thinking {'on' if thinking else 'off'}; /think, /no_think, /exit", flush=True)
    while True:
        if interactive:
            print("you> ", end="", flush=True)
        line = sys.stdin.readline()
        if not line or line.strip() == "/exit":
            return
        text = line.rstrip("\n")
        if text.strip() in ("/think", "/no_think"):
            thinking = text.strip() == "/think"
            print(f"[thinking {'on' if thinking else 'off'}]", flush=True)
            continue
        if not text.strip():
            continue
        message = {"role": "user", "content": text}
        turn_thinking = resolve_thinking([message], enable_thinking=thinking)
        prompt = chat.encode_prompt([*messages, message], turn_thinking)
        try:
            chat.check_fits(prompt, args)
        except cli.UsageError as e:  # the history outgrew the context: say so and keep the session
            print(f"[not sent: {e}]", flush=True)
            continue
        messages.append(message)
        thinking = turn_thinking
        print("assistant> ", end="", flush=True)
        printer.reset()
        result = chat.reply(prompt, args, thinking, stream=printer)
        printer.finish()
        suffix = " [max tokens]" if result.finish_reason[0] == "length" else ""
        print(suffix, flush=True)
        messages.append({"role": "assistant", "content": chat.text(result.tokens[0])})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m qwen3jax.chat_repl", description=__doc__.split("\n\n")[0])
    cli.add_model_args(parser)
    parser.add_argument("--system", help="an optional system message")
    cli.add_decoding_args(parser)
    args = parser.parse_args(argv)
    return cli.run(lambda: _repl(args))


if __name__ == "__main__":
    raise SystemExit(main())

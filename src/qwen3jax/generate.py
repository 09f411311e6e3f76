"""`python -m qwen3jax.generate --ckpt DIR | --hf DIR --prompt "..."`: answer one user message through the chat
template and print each sample's thinking and answer separately.

Decoding defaults are SPEC §4's eval settings for the mode (thinking: temperature 0.6, top-p 0.95, top-k 20;
--no-think: 0.7, 0.8, 20; a `/think` or `/no_think` in the system message or the prompt switches the mode as in
chat); --budget N caps the thinking at N tokens (the stop-thinking text is then inserted).
"""

from __future__ import annotations

import argparse

from qwen3jax.chat import resolve_thinking
from qwen3jax.sample import cli


def _generate(args: argparse.Namespace) -> None:
    chat = cli.load(args)
    system = [{"role": "system", "content": args.system}] if args.system else []
    messages = system + [{"role": "user", "content": args.prompt}]
    thinking = resolve_thinking(messages, enable_thinking=not args.no_think)  # soft switches in either message
    prompt = chat.encode_prompt(messages, thinking)
    result = chat.reply(prompt, args, thinking, n=args.n)
    for i, ids in enumerate(result.tokens):
        thought, answer = chat.split_thinking(ids, prompt)
        print(f"=== sample {i + 1}/{args.n}: {result.finish_reason[i]}, {result.lengths[i]} tokens ===")
        print("--- thinking ---")
        print("(none)" if thought is None else chat.text(thought).strip())
        print("--- answer ---")
        print(chat.text(answer).strip(), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m qwen3jax.generate", description=__doc__.split("\n\n")[0])
    cli.add_model_args(parser)
    parser.add_argument("--prompt", required=True, help="the user message")
    parser.add_argument("--system", help="an optional system message")
    parser.add_argument("--n", type=cli.POSITIVE_INT, default=1, help="samples to draw")
    cli.add_decoding_args(parser)
    args = parser.parse_args(argv)
    return cli.run(lambda: _generate(args))


if __name__ == "__main__":
    raise SystemExit(main())

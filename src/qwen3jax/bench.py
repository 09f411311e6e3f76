"""`make bench`: every benchmark of the project, each printing ratios against a reference measured in this run."""

from __future__ import annotations

import argparse
import importlib

SECTIONS = {
    "model": "qwen3jax.model.bench",  # forward+backward vs HF
    "train": "qwen3jax.train.bench",  # full AdamW step vs HF + torch AdamW; compile time vs depth
    "sft": "qwen3jax.train.bench_sft",  # chat-packed SFT step vs the pretraining step; chat packing efficiency
    "decode": "qwen3jax.sample.bench",  # generate vs HF generate
    "data": "qwen3jax.data.bench",  # pipeline tokens/s vs the tiny train step's consumption
    "rl": "qwen3jax.rl.bench",  # rollouts (8 prompts x 8 samples x 128 tokens) vs HF generate; rollout share of a step
    "rewards": "qwen3jax.rewards.bench",  # math answers/s, sandboxed programs/s, sandbox overhead vs bare python
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", nargs="*", default=None, help="run only these sections: " + ", ".join(SECTIONS))
    args = parser.parse_args()
    for name, module in SECTIONS.items():
        if args.only and name not in args.only:
            continue
        print(f"== {name} ==", flush=True)
        importlib.import_module(module).run()


if __name__ == "__main__":
    main()

"""Thinking-mode fusion data (TR §4.3, SPEC §4): one SFT set that teaches both modes and the `/think` `/no_think`
soft switches.

Thinking examples are curated responses with a think block (rejection-sampled from the reasoning-RL model on the
cold-start queries, through `posttrain.curate`); non-thinking examples answer directly, and their trained turn
renders with the empty think block. Flags are plain text in the user or the system message; some examples carry no
flag (the default mode, thinking); multi-turn conversations switch at random and the last flag in force decides
the final, trained turn (the rule of `chat.thinking.resolve_thinking`, which the chat encoder applies).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import random
import sys
from collections import Counter
from collections.abc import Sequence
from typing import Any

from qwen3jax.posttrain.curate import write_jsonl
from qwen3jax.posttrain.filters import split_thinking


@dataclasses.dataclass(frozen=True)
class Example:
    """One query with its response in each mode: `thinking` is `<think>…</think>` + answer, `direct` the answer."""

    prompt: str
    thinking: str
    direct: str
    id: str = ""


def example_from_curated(record: dict[str, Any]) -> Example:
    """An example from a curated chat record (user prompt, thinking assistant response): its direct answer is the
    response's final summary."""
    user, assistant = record["messages"][-2:]
    parts = split_thinking(assistant["content"])
    if parts is None or not parts.thinking:
        raise ValueError(f"record {record.get('provenance', {}).get('query_id', '?')}: the response has no thinking")
    return Example(user["content"], assistant["content"], parts.answer, record.get("provenance", {}).get("query_id", ""))


@dataclasses.dataclass(frozen=True)
class FusionMix:
    """Shares of the fused set (each in [0, 1])."""

    no_think_share: float = 0.5  # examples whose trained turn is non-thinking
    multi_turn_share: float = 0.3  # conversations of 2-3 user turns with switches
    system_flag_share: float = 0.25  # flags placed in the system message instead of the user's
    unflagged_share: float = 0.1  # thinking examples without any flag (thinking is the default)

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if not 0 <= value <= 1:
                raise ValueError(f"{field.name} must be in [0, 1], got {value}")


def _flag(thinking: bool) -> str:
    return "/think" if thinking else "/no_think"


def _single_turn(example: Example, thinking: bool, mix: FusionMix, rng: random.Random) -> tuple[list[dict], str]:
    """(messages, layout) of a one-query conversation."""
    answer = {"role": "assistant", "content": example.thinking if thinking else example.direct}
    if thinking and rng.random() < mix.unflagged_share:
        return [{"role": "user", "content": example.prompt}, answer], "unflagged"
    if rng.random() < mix.system_flag_share:
        system = {"role": "system", "content": f"You are a helpful assistant. {_flag(thinking)}"}
        return [system, {"role": "user", "content": example.prompt}, answer], "system_flag"
    return [{"role": "user", "content": f"{example.prompt} {_flag(thinking)}"}, answer], "user_flag"


def _multi_turn(examples: Sequence[Example], thinking: bool, rng: random.Random) -> list[dict[str, str]]:
    """Earlier turns switch at random (their replies are history: the template drops their reasoning); the last
    user turn's flag, sometimes preceded by the opposite flag in the same message, sets the final mode."""
    messages: list[dict[str, str]] = []
    for example in examples[:-1]:
        mode = rng.random() < 0.5
        messages += [{"role": "user", "content": f"{example.prompt} {_flag(mode)}"},
                     {"role": "assistant", "content": example.thinking if mode else example.direct}]  # fmt: skip
    last = examples[-1]
    flags = f"{_flag(not thinking)} {_flag(thinking)}" if rng.random() < 0.3 else _flag(thinking)
    messages += [{"role": "user", "content": f"{last.prompt} {flags}"},
                 {"role": "assistant", "content": last.thinking if thinking else last.direct}]  # fmt: skip
    return messages


def fusion_records(examples: Sequence[Example], *, mix: FusionMix = FusionMix(), seed: int = 0) -> list[dict[str, Any]]:
    """One chat record per example (the example's query is the trained, final turn), in a seeded random order of
    modes and layouts; multi-turn records take their earlier turns from other examples."""
    if not examples:
        raise ValueError("no examples to fuse")
    rng = random.Random(seed)
    records = []
    for i, example in enumerate(examples):
        thinking = rng.random() >= mix.no_think_share
        if len(examples) > 2 and rng.random() < mix.multi_turn_share:
            others = rng.sample([e for j, e in enumerate(examples) if j != i], rng.randint(1, 2))
            messages, layout = _multi_turn([*others, example], thinking, rng), "multi_turn"
        else:
            messages, layout = _single_turn(example, thinking, mix, rng)
        records.append({"messages": messages, "enable_thinking": True,
                        "provenance": {"query_id": example.id, "mode": "think" if thinking else "no_think",
                                       "layout": layout}})  # fmt: skip
    return records


def main(argv: list[str] | None = None) -> int:
    """`python -m qwen3jax.posttrain.fusion --thinking curated.jsonl --output fusion.jsonl`: fuse curated thinking
    records (from `posttrain.curate`, e.g. with the reasoning-RL model as teacher) into the fusion SFT set."""
    parser = argparse.ArgumentParser(prog="python -m qwen3jax.posttrain.fusion", description=main.__doc__)
    parser.add_argument("--thinking", required=True, help="curated chat JSONL with thinking responses")
    parser.add_argument("--output", required=True)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    parser.add_argument("--seed", type=int, default=0)
    for field in dataclasses.fields(FusionMix):
        parser.add_argument(f"--{field.name}", type=float, default=field.default)
    args = parser.parse_args(argv)
    output = pathlib.Path(args.output)
    try:
        if output.exists() and not args.overwrite:
            raise ValueError(f"{output} exists; pass --overwrite to replace it")
        mix = FusionMix(**{f.name: getattr(args, f.name) for f in dataclasses.fields(FusionMix)})
        lines = pathlib.Path(args.thinking).read_text(encoding="utf-8").splitlines()
        examples = [example_from_curated(json.loads(line)) for line in lines if line.strip()]
        records = fusion_records(examples, mix=mix, seed=args.seed)
    except (ValueError, OSError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    write_jsonl(output, records)
    modes = Counter(r["provenance"]["mode"] for r in records)
    print(f"{len(records)} fusion records ({modes['think']} think, {modes['no_think']} no_think) -> {output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The embedded chat SFT set: the corpus' synthetic problems as conversations, each in thinking form (the worked
solution as the think block, then the boxed answer) and in non-thinking form (the boxed answer after the empty
think block), split as the problems are (the eval split holds other problems than the train split).

Records: `{"messages": [user, assistant], "enable_thinking": bool, "id", "kind", "answer"}`, the chat-record format
of `data/conversations.py`. Built once per corpus (`cache.build_once`), next to it, as ArrayRecord; the data config
names it as the embedded source `reasoning_chat` with `format="chat"`.
"""

from __future__ import annotations

import hashlib
import inspect
import pathlib
import sys
from collections.abc import Iterator, Mapping
from typing import Any

from array_record.python.array_record_module import ArrayRecordWriter

from qwen3jax.data.cache import build_once, cache_root
from qwen3jax.data.records import encode_json_record

CHAT_SOURCE = "reasoning_chat"


def final_answer(answer: str) -> str:
    return f"The final answer is $\\boxed{{{answer}}}$."


def conversations(problem: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """The two chat records of one problem (`build.reasoning_qa_pairs` layout): thinking, then non-thinking."""
    user = {"role": "user", "content": problem["query"]}
    labels = {"id": problem["id"], "kind": problem["kind"], "answer": problem["answer"]}
    thinking = {"role": "assistant", "reasoning_content": problem["solution"], "content": final_answer(problem["answer"])}
    yield {"messages": [user, thinking], "enable_thinking": True, **labels}
    yield {"messages": [user, {"role": "assistant", "content": final_answer(problem["answer"])}],
           "enable_thinking": False, **labels}  # fmt: skip


def source_path(split: str) -> pathlib.Path:
    """The ArrayRecord file of the embedded chat set's `split` ("train" or "eval"), built on first use."""
    from qwen3jax.data.corpus import build  # pylint: disable=import-outside-toplevel

    if split not in build.SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {build.SPLITS}")
    code = hashlib.sha256(inspect.getsource(sys.modules[__name__]).encode()).hexdigest()[:8]
    key = f"{build.corpus_key(build.DEFAULT_CORPUS)}-{CHAT_SOURCE}-{code}"

    def write(out: pathlib.Path) -> None:
        for part in build.SPLITS:
            writer = ArrayRecordWriter(str(out / f"{CHAT_SOURCE}.{part}.array_record"), "group_size:1")
            for problem in build.reasoning_qa_pairs(part):
                for record in conversations(problem):
                    writer.write(encode_json_record(record))
            writer.close()

    return build_once(cache_root() / "corpus" / key, write) / f"{CHAT_SOURCE}.{split}.array_record"

"""Multi-turn rollouts with tools: sample a model turn, run the tool calls it makes, append the tool responses as the
chat template renders them, and sample the next turn from the whole sequence, until a turn calls no tool or the turn
limit is reached.

Every row is one token sequence that only grows: the prompt, then per turn the policy's tokens (ending with
`<|im_end|>`) and, when it called tools, the template's tokens between that turn and the next one
(`chat.encode_tool_responses`: the tool results in a user block and the next assistant header). The policy samples
each turn from exactly that prefix, so its log-probs are those of the assembled sequence, and only its own tokens
are trained: the template tokens and tool results are context, with no loss and log-prob 0. In thinking mode and for
turns the template renders back unchanged (a think block with text, no stray newlines around it) the sequence is the
official template's rendering of the final conversation; in non-thinking mode it also keeps the empty think block
each turn's generation prompt held, which the template drops from earlier turns when rendering a finished
conversation, because it is what the policy saw when it sampled.

A row ends when its turn calls no tool, when its turn stops without `<|im_end|>` (length limit or `<|endoftext|>`;
truncated if by length), at `max_turns` (its calls left unanswered, counted), or when the next turn would not fit in
`max_len` tokens (truncated).
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from qwen3jax.chat import encode_tool_responses
from qwen3jax.rl.tools import ToolEnvironment
from qwen3jax.sample.engine import bucket
from qwen3jax.sample.result import GenerationResult

# (prompts, samples per prompt, turn index) -> the generation of `samples` continuations of each prompt.
SampleFn = Callable[[list[list[int]], int, int], GenerationResult]


@dataclasses.dataclass
class Episode:
    """One multi-turn rollout row.

    tokens: the prompt followed by every turn and the template tokens between turns.
    sampled: per token, whether the policy chose it (the loss may train it): not the prompt, the template tokens
      and tool results, or the text the thinking budget forced.
    logprobs: per token, the sampler's log-prob of it (0 where `sampled` is false).
    messages: the conversation after the prompt, `{"role": "assistant" | "tool", "content": ...}`; an assistant
      message's content is its reply text as the rewards read it (think block included, stop token not).
    """

    prompt_len: int
    tokens: list[int]
    sampled: list[bool]
    logprobs: list[float]
    messages: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    truncated: bool = False
    turn_limit: bool = False  # the last turn called tools and the turn limit left them unmade
    turn_tokens: int = 0  # tokens of the model's turns (sampled or budget-forced), the completion length
    tool_calls: int = 0  # calls made (answered), failed ones included
    tool_errors: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    done: bool = False

    @property
    def final_answer(self) -> str:
        """The last model turn's reply text (what the rewards score)."""
        return self.messages[-1]["content"]

    @property
    def turns(self) -> int:
        return sum(m["role"] == "assistant" for m in self.messages)


def multiturn_rollout(
    sample: SampleFn,
    prompts: Sequence[Sequence[int]],
    *,
    n: int,
    tools: ToolEnvironment,
    tokenizer,
    reply_text: Callable[[list[int]], str],
    max_turns: int,
    max_new_tokens: int,
    max_len: int,
    enable_thinking: bool,
) -> list[Episode]:
    """`n` episodes per prompt, prompt-major (as `generate` orders samples). `reply_text` turns a turn's tokens
    into its reply text; `max_new_tokens` is the sampler's limit per turn, `max_len` the limit of a whole row."""
    if max_turns < 1:
        raise ValueError(f"max_turns must be >= 1, got {max_turns}")
    im_end = tokenizer.token_to_id("<|im_end|>")
    episodes = [Episode(len(p), list(p), [False] * len(p), [0.0] * len(p)) for p in prompts for _ in range(n)]
    result = sample([list(p) for p in prompts], n, 0)
    for turn in range(max_turns):
        if turn:
            active = [e for e in episodes if not e.done]
            if not active:
                break
            result = _sample_rows(sample, [list(e.tokens) for e in active], turn)
        else:
            active = episodes
        replies = []
        for k, episode in enumerate(active):
            tokens = result.tokens[k]
            episode.tokens += tokens
            episode.turn_tokens += len(tokens)
            episode.sampled += [not f for f in result.forced[k]]
            episode.logprobs += [float(x) for x in np.where(result.forced[k], 0.0, result.logprobs[k])]
            replies.append(reply_text(tokens))
            episode.messages.append({"role": "assistant", "content": replies[-1]})
            episode.truncated = result.finish_reason[k] == "length"
            episode.done = not tokens or tokens[-1] != im_end  # stopped by length or by <|endoftext|>
        answering = [k for k, e in enumerate(active) if not e.done]
        if turn + 1 == max_turns:  # no next turn would read the responses: the calls are not made
            for k in answering:
                active[k].turn_limit, active[k].done = tools.count_calls(replies[k]) > 0, True
            break
        for k, responses in zip(answering, tools.respond_all([replies[k] for k in answering])):
            _answer(active[k], responses, tokenizer, max_len=max_len, max_new_tokens=max_new_tokens,
                    enable_thinking=enable_thinking)  # fmt: skip
    return episodes


def _answer(episode: Episode, responses, tokenizer, *, max_len, max_new_tokens, enable_thinking) -> None:
    """Append the tool responses and the next turn's header to a row whose turn ended with `<|im_end|>`, or end it."""
    episode.tool_calls += len(responses)
    episode.tool_errors.update(r.error for r in responses if r.error)
    if not responses:  # the final answer
        episode.done = True
        return
    between = encode_tool_responses(tokenizer, [r.text for r in responses], enable_thinking=enable_thinking)
    if len(episode.tokens) + len(between) + max_new_tokens > max_len:
        episode.done = episode.truncated = True
        return
    episode.tokens += between
    episode.sampled += [False] * len(between)
    episode.logprobs += [0.0] * len(between)
    episode.messages += [{"role": "tool", "content": r.text} for r in responses]


def _sample_rows(sample: SampleFn, rows: list[list[int]], turn: int) -> GenerationResult:
    """One sample of each row, the batch padded to a power of two with copies of the first row (so a run compiles
    one program per bucket, not one per number of rows still running); the padding's samples are dropped."""
    padded = rows + [rows[0]] * (bucket(len(rows), 1) - len(rows))
    result = sample(padded, 1, turn)
    k = len(rows)
    return GenerationResult(result.tokens[:k], result.logprobs[:k], result.raw_logprobs[:k], result.forced[:k],
                            result.finish_reason[:k], result.lengths[:k])  # fmt: skip

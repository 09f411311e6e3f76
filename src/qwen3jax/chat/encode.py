"""Token ids and loss mask of a conversation, for SFT / distillation data.

The ids are those of `apply_chat_template(messages, tools=tools)` in which the template's markup special tokens are
control ids and the messages' text is data: a special-token string inside a content, reasoning, tool call or tool
result is ordinary text (`tokenizer.encode_plain`), so no message can inject a turn boundary or a think block. For
data without such strings the ids are exactly `tokenizer.encode` of the rendered text. To get them piecewise without
trusting BPE to respect our boundaries, the rendered text is cut only at the markup's special tokens, which the
tokenizer matches before BPE and never merges with neighbours. Inside one stretch between special tokens the only
mask boundary is the start of an assistant body after `assistant\\n`; it is placed by checking that encoding the
text before it yields a prefix of the stretch's ids (byte-level tokens decode to that text exactly), and an error
is raised when BPE merges across it (assistant content starting with a newline) rather than guessing.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal, Protocol

from qwen3jax.chat.messages import Turn, parse_messages
from qwen3jax.chat.template import last_query_index, render_pieces, split_reasoning
from qwen3jax.chat.thinking import resolve_thinking
from qwen3jax.special_tokens import CHAT_TEMPLATE_TOKENS as TEMPLATE_SPECIAL_TOKENS

_SPECIAL_SPLIT = re.compile("(" + "|".join(re.escape(t) for t in TEMPLATE_SPECIAL_TOKENS) + ")")

TrainOn = Literal["after_last_query", "last"]


class TokenizerLike(Protocol):
    """What the encoder needs: `encode` without added BOS/EOS, in which special-token strings such as
    `<|im_start|>` become their single ids, `encode_plain`, in which they are ordinary text, and `token_to_id` (None
    for an unknown token)."""

    def encode(self, text: str) -> list[int]: ...

    def encode_plain(self, text: str) -> list[int]: ...

    def token_to_id(self, token: str) -> int | None: ...


def trained_turns(messages: Sequence[Mapping[str, Any]], train_on: TrainOn = "after_last_query") -> list[int]:
    """Indices of the assistant messages whose bodies the loss covers.

    "after_last_query" (default): every assistant turn after the last real user query, i.e. the turns whose
    reasoning the template keeps (a multi-step tool-use answer trains every step). Earlier turns are context only:
    the template drops their reasoning, so training on them would teach answering without thinking.
    "last": only the final message, which must be an assistant turn.
    """
    return _choose_turns(parse_messages(messages), train_on)


def _choose_turns(turns: Sequence[Turn], train_on: TrainOn) -> list[int]:
    if train_on == "after_last_query":
        chosen = [i for i in range(last_query_index(turns) + 1, len(turns)) if turns[i].role == "assistant"]
        if not chosen:
            raise ValueError("no assistant turn after the last user query: nothing to train on")
        return chosen
    if train_on == "last":
        if turns[-1].role != "assistant":
            raise ValueError(f"train_on='last' needs a final assistant message, got role {turns[-1].role!r}")
        return [len(turns) - 1]
    raise ValueError(f"train_on must be 'after_last_query' or 'last', got {train_on!r}")


def encode_conversation(
    tokenizer: TokenizerLike,
    messages: Sequence[Mapping[str, Any]],
    *,
    tools: Sequence[Mapping[str, Any]] | None = None,
    enable_thinking: bool = True,
    train_on: TrainOn = "after_last_query",
    strict_modes: bool = True,
) -> tuple[list[int], list[int]]:
    """(tokens, loss_mask) of a finished conversation; mask 1 on each trained assistant turn's think block, answer,
    tool calls and closing `<|im_end|>`, 0 on headers, the newline after `<|im_end|>` and everything else.

    `enable_thinking` is the mode when no `/think` or `/no_think` switch precedes a turn. With `strict_modes`
    (demonstrations to imitate), a trained turn in non-thinking mode must carry no reasoning (the template then gives
    a final turn the empty think block); reasoning there is contradictory data and raises instead of being dropped
    silently. Replies that are judged rather than imitated (`strict_modes=False`: a policy's sample, a rejected
    completion) are rendered as the template renders them, reasoning included: keeping to the mode is what the
    format reward scores, not an error.
    """
    turns = parse_messages(messages)
    chosen = _choose_turns(turns, train_on)
    for i in chosen if strict_modes else ():
        reasoning, _ = split_reasoning(turns[i])
        if reasoning.strip("\n") and not resolve_thinking(messages[: i + 1], enable_thinking=enable_thinking):
            raise ValueError(
                f"message {i}: assistant turn has reasoning but the conversation is in non-thinking mode there "
                "(/no_think or enable_thinking=False); non-thinking answers must have an empty think block"
            )
    pieces = render_pieces(turns, tools=tools)
    return _encode_pieces(tokenizer, [(text, int(turn in chosen), turn, data) for text, turn, data in pieces])


def encode_prompt(
    tokenizer: TokenizerLike,
    messages: Sequence[Mapping[str, Any]],
    *,
    tools: Sequence[Mapping[str, Any]] | None = None,
    enable_thinking: bool = True,
) -> list[int]:
    """Token ids of a generation prompt (`add_generation_prompt=True`), the messages' text encoded as data."""
    pieces = render_pieces(parse_messages(messages), tools=tools, add_generation_prompt=True,
                           enable_thinking=enable_thinking)  # fmt: skip
    return _encode_pieces(tokenizer, [(text, 0, turn, data) for text, turn, data in pieces])[0]


def encode_tool_responses(
    tokenizer: TokenizerLike, results: Sequence[str], *, enable_thinking: bool = True
) -> list[int]:
    """Token ids that follow an assistant turn's `<|im_end|>` when tools answer its calls: the newline closing that
    turn, the results in one user block of `<tool_response>`s, and the next generation prompt, exactly as
    `encode_prompt` encodes them inside the whole conversation (none of it depends on the assistant turn's text).
    Multi-turn rollouts append these to the model's tokens and continue sampling."""
    if not results:
        raise ValueError("no tool results to encode")
    messages = [{"role": "assistant", "content": ""}, *({"role": "tool", "content": r} for r in results)]
    pieces = render_pieces(parse_messages(messages), add_generation_prompt=True, enable_thinking=enable_thinking)
    end = pieces.index(("<|im_end|>", 0, False))  # the assistant turn's last piece
    return _encode_pieces(tokenizer, [(text, 0, turn, data) for text, turn, data in pieces[end + 1 :]])[0]


def _encode_pieces(
    tokenizer: TokenizerLike, pieces: list[tuple[str, int, int | None, bool]]
) -> tuple[list[int], list[int]]:
    special_ids: dict[str, int] = {}
    tokens: list[int] = []
    mask: list[int] = []
    stretch: list[tuple[str, int, int | None]] = []  # text between two markup special tokens, in pieces
    for text, flag, turn, data in pieces:
        if data:  # never cut: its special-token strings are text
            stretch += [(text, flag, turn)] if text else []
            continue
        for k, part in enumerate(_SPECIAL_SPLIT.split(text)):
            if k % 2 == 0:  # re.split puts the captured special tokens at odd positions
                if part:
                    stretch.append((part, flag, turn))
                continue
            _encode_stretch(tokenizer, stretch, tokens, mask)
            stretch = []
            if part not in special_ids:
                special_ids[part] = _special_id(tokenizer, part)
            tokens.append(special_ids[part])
            mask.append(flag)
    _encode_stretch(tokenizer, stretch, tokens, mask)
    return tokens, mask


def _encode_stretch(tokenizer: TokenizerLike, stretch: list[tuple[str, int, int | None]], tokens, mask) -> None:
    if not stretch:
        return
    text = "".join(part for part, _, _ in stretch)
    ids = list(tokenizer.encode_plain(text))
    done, prefix = 0, ""
    for n, (part, flag, turn) in enumerate(stretch):
        prefix += part
        if n + 1 == len(stretch):
            end = len(ids)
        elif stretch[n + 1][1] == flag:
            continue  # no mask boundary here
        else:
            head = list(tokenizer.encode_plain(prefix))
            if head != ids[: len(head)]:
                owner = turn if flag else stretch[n + 1][2]
                raise ValueError(
                    f"message {owner}: BPE merges text across the loss-mask boundary in {text!r} (assistant content "
                    "starting with a newline fuses with the header's newline), so no token boundary separates the "
                    "header from the trained answer; strip the leading newline from that message's content"
                )
            end = len(head)
        tokens += ids[done:end]
        mask += [flag] * (end - done)
        done = end


def _special_id(tokenizer: TokenizerLike, token: str) -> int:
    """The single id of a special token, checking the tokenizer really isolates it (else piecewise != whole)."""
    token_id = tokenizer.token_to_id(token)
    if token_id is None:
        raise ValueError(f"tokenizer has no token {token!r}; it is not a Qwen3 tokenizer")
    encoded = list(tokenizer.encode(token))
    if encoded != [token_id]:
        raise ValueError(
            f"tokenizer encodes {token!r} as {encoded}, not as its single id {token_id}: it must be an added special "
            "token for the chat template's encoding to be well defined"
        )
    return token_id

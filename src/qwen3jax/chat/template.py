"""Native renderer of the official Qwen3 chat template (April 2025 hybrid-thinking release, tokenizer_config.json).

Output is byte-identical to that jinja text for every valid conversation; each rule below cites the template
behaviour it reproduces, including its quirks (which `content` value decides the tool-call newline, when an empty
reasoning still gets a think block). tests/chat checks both renderers against hand-written expected strings.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from qwen3jax.chat.messages import Turn, is_tool_response, parse_messages, parse_tools

EMPTY_THINK = "<think>\n\n</think>\n\n"
_TOOLS_INTRO = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>"
)
_TOOLS_OUTRO = (
    "\n</tools>\n\nFor each function call, return a json object with function name and arguments within "
    '<tool_call></tool_call> XML tags:\n<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n'
    "</tool_call><|im_end|>\n"
)

# A rendered piece of text; for an assistant turn's body (everything after `<|im_start|>assistant\n` up to and
# including its `<|im_end|>`) the index of that message, None for everything else (the loss mask is built on this);
# and whether it is message data (contents, reasoning, tool names, arguments and schemas) rather than template markup:
# special-token strings in data are text, never the control tokens (else a message could inject turn boundaries).
Piece = tuple[str, int | None, bool]


def apply_chat_template(
    messages: Sequence[Mapping[str, Any]],
    *,
    tools: Sequence[Mapping[str, Any]] | None = None,
    add_generation_prompt: bool = False,
    enable_thinking: bool = True,
) -> str:
    """Render `messages` exactly as the official Qwen3 jinja template does; ValueError on malformed input."""
    pieces = render_pieces(
        parse_messages(messages),
        tools=tools,
        add_generation_prompt=add_generation_prompt,
        enable_thinking=enable_thinking,
    )
    return "".join(text for text, _, _ in pieces)


def last_query_index(turns: Sequence[Turn]) -> int:
    """Index of the last real user query: the last user turn that is not a wrapped tool response.

    Only assistant turns after it keep their reasoning. With no real query the template falls back to the last
    index, so no assistant turn keeps reasoning.
    """
    for i in range(len(turns) - 1, -1, -1):
        if turns[i].role == "user" and not is_tool_response(turns[i].content):
            return i
    return len(turns) - 1


def split_reasoning(turn: Turn) -> tuple[str, str]:
    """(reasoning, content) of an assistant turn: `reasoning_content` if given (content untouched), else the text
    around the first `</think>` of content, trimmed exactly as the template's split/strip chain does."""
    if turn.reasoning_content is not None:
        return turn.reasoning_content, turn.content
    if "</think>" not in turn.content:
        return "", turn.content
    parts = turn.content.split("</think>")
    return parts[0].rstrip("\n").split("<think>")[-1].lstrip("\n"), parts[-1].lstrip("\n")


def render_pieces(
    turns: Sequence[Turn],
    *,
    tools: Sequence[Mapping[str, Any]] | None = None,
    add_generation_prompt: bool = False,
    enable_thinking: bool = True,
) -> list[Piece]:
    """The rendering of validated turns as pieces tagged for the loss mask; `apply_chat_template` joins them."""
    for name, flag in (("add_generation_prompt", add_generation_prompt), ("enable_thinking", enable_thinking)):
        # The template tests `enable_thinking is false` (identity), so 0 or None would silently mean "thinking".
        if not isinstance(flag, bool):
            raise ValueError(f"{name} must be a bool, got {type(flag).__name__}")
    tool_texts = parse_tools(tools)
    first_is_system = turns[0].role == "system"
    pieces: list[Piece] = []
    if tool_texts:
        pieces.append(("<|im_start|>system\n", None, False))
        if first_is_system:
            pieces += [(turns[0].content, None, True), ("\n\n", None, False)]
        pieces.append((_TOOLS_INTRO, None, False))
        for text in tool_texts:
            pieces += [("\n", None, False), (text, None, True)]
        pieces.append((_TOOLS_OUTRO, None, False))
    elif first_is_system:
        pieces += _block("system", turns[0].content)

    query = last_query_index(turns)
    last = len(turns) - 1
    for i, turn in enumerate(turns):
        if turn.role == "user" or (turn.role == "system" and i > 0):
            pieces += _block(turn.role, turn.content)
        elif turn.role == "assistant":
            body = _assistant_body(turn, after_query=i > query, is_last=i == last)
            pieces += [("<|im_start|>assistant\n", None, False), *[(text, i, data) for text, data in body]]
            pieces += [("<|im_end|>", i, False), ("\n", None, False)]
        elif turn.role == "tool":
            # Consecutive tool results share one user block: open it on the first, close it on the last.
            if i == 0 or turns[i - 1].role != "tool":
                pieces.append(("<|im_start|>user", None, False))
            pieces += [("\n<tool_response>\n", None, False), (turn.content, None, True)]
            pieces.append(("\n</tool_response>", None, False))
            if i == last or turns[i + 1].role != "tool":
                pieces.append(("<|im_end|>\n", None, False))

    if add_generation_prompt:
        pieces.append(("<|im_start|>assistant\n" + ("" if enable_thinking else EMPTY_THINK), None, False))
    return pieces


def _block(role: str, content: str) -> list[Piece]:
    return [(f"<|im_start|>{role}\n", None, False), (content, None, True), ("<|im_end|>\n", None, False)]


def _assistant_body(turn: Turn, *, after_query: bool, is_last: bool) -> list[tuple[str, bool]]:
    """The body's (text, is data) parts, up to its `<|im_end|>`."""
    reasoning, content = split_reasoning(turn)
    # The final message always shows a think block (empty if need be); earlier ones after the query only if they
    # carry reasoning. Turns up to the last query lose their reasoning entirely.
    if after_query and (is_last or reasoning):
        body = [("<think>\n", False), (reasoning.strip("\n"), True), ("\n</think>\n\n", False)]
        body.append((content.lstrip("\n"), True))
    else:
        body = [(content, True)]
    for j, (name, arguments) in enumerate(turn.tool_calls):
        # The template tests the un-lstripped `content` here, not the text it printed.
        if j > 0 or content:
            body.append(("\n", False))
        body += [('<tool_call>\n{"name": "', False), (name, True), ('", "arguments": ', False), (arguments, True)]
        body.append(("}\n</tool_call>", False))
    return body

"""Conversations covering every branch of the Qwen3 template, each with its expected rendering written by hand from
the template's rules (SPEC §5), not produced by either renderer."""

from __future__ import annotations

from typing import Any, NamedTuple


class Case(NamedTuple):
    id: str
    messages: list[dict[str, Any]]
    expected: str
    kwargs: dict[str, Any] = {}


def block(role: str, text: str) -> str:
    return f"<|im_start|>{role}\n{text}<|im_end|>\n"


def assistant(body: str) -> str:
    return block("assistant", body)


def think(reasoning: str, answer: str) -> str:
    return f"<think>\n{reasoning}\n</think>\n\n{answer}"


GEN = "<|im_start|>assistant\n"
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city, e.g. Zürich <now> & later",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
# Key order kept (no sort_keys), non-ASCII and <>& verbatim: HF's tojson, not jinja's.
WEATHER_JSON = (
    '{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city, e.g. Zürich <now> '
    '& later", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}'
)
CLOCK = {"type": "function", "function": {"name": "now", "parameters": {}}}
CLOCK_JSON = '{"type": "function", "function": {"name": "now", "parameters": {}}}'


def tools_system(system: str, *tool_json: str) -> str:
    head = f"<|im_start|>system\n{system}\n\n" if system else "<|im_start|>system\n"
    return (
        head
        + "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
        + "You are provided with function signatures within <tools></tools> XML tags:\n<tools>"
        + "".join("\n" + t for t in tool_json)
        + "\n</tools>\n\nFor each function call, return a json object with function name and arguments within "
        + "<tool_call></tool_call> XML tags:\n<tool_call>\n"
        + '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call><|im_end|>\n'
    )


def call(arguments_json: str, name: str = "get_weather") -> str:
    return f'<tool_call>\n{{"name": "{name}", "arguments": {arguments_json}}}\n</tool_call>'


def responses(*outputs: str) -> str:
    return "<|im_start|>user" + "".join(f"\n<tool_response>\n{o}\n</tool_response>" for o in outputs) + "<|im_end|>\n"


def wrapped(call_args: Any, name: str = "get_weather") -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "arguments": call_args}}


U = {"role": "user", "content": "Hello"}
CASES = [
    Case("user_only", [U], block("user", "Hello")),
    Case("generation_prompt", [U], block("user", "Hello") + GEN, {"add_generation_prompt": True}),
    Case(
        "generation_prompt_no_think",
        [U],
        block("user", "Hello") + GEN + "<think>\n\n</think>\n\n",
        {"add_generation_prompt": True, "enable_thinking": False},
    ),
    Case(
        "final_answer_gets_empty_think_block",
        [U, {"role": "assistant", "content": "Hi there"}],
        block("user", "Hello") + assistant(think("", "Hi there")),
        {"enable_thinking": False},  # no generation prompt: the flag changes nothing
    ),
    Case(
        "system_first_and_later",
        [
            {"role": "system", "content": "You are Qwen."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"},
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Again"},
        ],
        block("system", "You are Qwen.")
        + block("user", "Hi")
        + assistant("Hello!")
        + block("system", "Be brief.")
        + block("user", "Again")
        + GEN,
        {"add_generation_prompt": True},
    ),
    Case(
        "system_only_later",
        [U, {"role": "system", "content": "Late rules."}],
        block("user", "Hello") + block("system", "Late rules."),
    ),
    Case(
        "reasoning_inside_content",
        [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "<think>\nadd\n</think>\n\n4"}],
        block("user", "2+2?") + assistant(think("add", "4")),
    ),
    Case(
        "reasoning_content_field_is_stripped",
        [
            {"role": "user", "content": "2+2?"},
            {"role": "assistant", "reasoning_content": "\n\nadd them\n\n", "content": "\n\n4\n"},
        ],
        block("user", "2+2?") + assistant(think("add them", "4\n")),
    ),
    Case(
        "close_tag_without_open_tag",
        [{"role": "user", "content": "q"}, {"role": "assistant", "content": "plan\n</think>\n\nanswer"}],
        block("user", "q") + assistant(think("plan", "answer")),
    ),
    Case(
        "reasoning_field_leaves_content_unsplit",
        [
            {"role": "user", "content": "q"},
            {"role": "assistant", "reasoning_content": "", "content": "<think>x</think>y"},
        ],
        block("user", "q") + assistant(think("", "<think>x</think>y")),
    ),
    Case(
        "earlier_turns_lose_reasoning",
        [
            {"role": "user", "content": "q1"},
            {"role": "assistant", "content": "<think>r1</think>a1"},
            {"role": "user", "content": "q2"},
            {"role": "assistant", "reasoning_content": "r2old", "content": "\nkept verbatim\n"},
            {"role": "user", "content": "q3"},
            {"role": "assistant", "reasoning_content": "r3", "content": "a3"},
        ],
        block("user", "q1")
        + assistant("a1")
        + block("user", "q2")
        + assistant("\nkept verbatim\n")
        + block("user", "q3")
        + assistant(think("r3", "a3")),
    ),
    Case(
        "tools_with_system",
        [{"role": "system", "content": "You are Qwen."}, {"role": "user", "content": "Weather in Paris?"}],
        tools_system("You are Qwen.", WEATHER_JSON) + block("user", "Weather in Paris?") + GEN,
        {"tools": [WEATHER], "add_generation_prompt": True},
    ),
    Case(
        "tools_without_system_and_later_system",
        [U, {"role": "system", "content": "Late rules."}],
        tools_system("", WEATHER_JSON, CLOCK_JSON) + block("user", "Hello") + block("system", "Late rules."),
        {"tools": [WEATHER, CLOCK]},
    ),
    Case("empty_tools_list", [U], block("user", "Hello"), {"tools": []}),
    Case(
        "multi_step_tool_use",
        [
            {"role": "user", "content": "Paris or Rome warmer?"},
            {
                "role": "assistant",
                "reasoning_content": "Need both cities.",
                "content": "",
                "tool_calls": [wrapped({"city": "Paris"}), wrapped('{"city": "Rome"}')],
            },
            {"role": "tool", "content": "18C"},
            {"role": "tool", "content": "21C"},
            {"role": "assistant", "content": "", "tool_calls": [wrapped({})]},
            {"role": "tool", "content": "{}"},
            {"role": "assistant", "reasoning_content": "Compare.", "content": "Rome is warmer."},
        ],
        tools_system("", WEATHER_JSON)
        + block("user", "Paris or Rome warmer?")
        + assistant(think("Need both cities.", "") + call('{"city": "Paris"}') + "\n" + call('{"city": "Rome"}'))
        + responses("18C", "21C")
        + assistant(call("{}"))  # after the query but not last, no reasoning: no think block
        + responses("{}")
        + assistant(think("Compare.", "Rome is warmer.")),
        {"tools": [WEATHER]},
    ),
    Case(
        "tool_call_unwrapped_with_content_before_query",
        [
            {"role": "user", "content": "q1"},
            {
                "role": "assistant",
                "content": "Let me check.",
                # A falsy `function` (as dumped by some clients) means the fields sit on the call itself.
                "tool_calls": [{"name": "now", "arguments": {}}, {"function": None, "name": "now", "arguments": "[]"}],
            },
            {"role": "tool", "content": "noon"},
            {"role": "user", "content": "q2"},
        ],
        block("user", "q1")
        + assistant("Let me check.\n" + call("{}", "now") + "\n" + call("[]", "now"))
        + responses("noon")
        + block("user", "q2"),
    ),
    Case(
        "tool_call_without_content_then_prompt",
        [
            {"role": "user", "content": "Time?"},
            {"role": "assistant", "content": None, "tool_calls": [wrapped('{"tz": "UTC"}', "now")]},
            {"role": "tool", "content": "12:00"},
        ],
        block("user", "Time?") + assistant(call('{"tz": "UTC"}', "now")) + responses("12:00") + GEN,
        {"add_generation_prompt": True},
    ),
    Case(
        "tool_call_newline_follows_unstripped_content",
        [
            {"role": "user", "content": "Time?"},
            {
                "role": "assistant",
                "reasoning_content": "r",
                "content": "\n",
                "tool_calls": [wrapped({"x": "é"}, "now")],
            },
        ],
        block("user", "Time?") + assistant(think("r", "") + "\n" + call('{"x": "é"}', "now")),
    ),
    Case(
        "tool_messages_first_and_last",
        [
            {"role": "tool", "content": "boot"},
            {"role": "user", "content": "q"},
            {"role": "assistant", "content": "", "tool_calls": [wrapped({})]},
            {"role": "tool", "content": "done"},
        ],
        responses("boot") + block("user", "q") + assistant(call("{}")) + responses("done"),
    ),
    Case(
        "wrapped_tool_response_is_not_a_query",
        [
            {"role": "user", "content": "q"},
            {"role": "assistant", "reasoning_content": "r1", "content": "calling"},
            {"role": "user", "content": "<tool_response>\nout\n</tool_response>"},
            {"role": "assistant", "reasoning_content": "r2", "content": "done"},
        ],
        block("user", "q")
        + assistant(think("r1", "calling"))
        + block("user", "<tool_response>\nout\n</tool_response>")
        + assistant(think("r2", "done")),
    ),
    Case(
        "half_wrapped_user_message_is_a_query",
        [
            {"role": "user", "content": "q"},
            {"role": "assistant", "reasoning_content": "r1", "content": "calling"},
            {"role": "user", "content": "<tool_response>\nout"},
            {"role": "assistant", "reasoning_content": "r2", "content": "done"},
        ],
        block("user", "q")
        + assistant("calling")
        + block("user", "<tool_response>\nout")
        + assistant(think("r2", "done")),
    ),
    Case(
        "no_real_query_keeps_no_reasoning",
        [
            {"role": "system", "content": "S"},
            {"role": "user", "content": "<tool_response>x</tool_response>"},
            {"role": "assistant", "reasoning_content": "r", "content": "a"},
        ],
        block("system", "S") + block("user", "<tool_response>x</tool_response>") + assistant("a"),
    ),
    Case(
        "special_text_in_user_content",
        [{"role": "user", "content": "<b>&é</b> /no_think"}, {"role": "assistant", "content": "ok"}],
        block("user", "<b>&é</b> /no_think") + assistant(think("", "ok")),
    ),
]

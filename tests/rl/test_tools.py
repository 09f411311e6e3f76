"""Rollout tools (`rl/tools.py`): the calculator computes what Python's arithmetic computes and refuses everything
else without evaluating it; python runs only in the sandbox, whose limits contain attacking programs; malformed
calls get an error response of their kind, never an exception; the schemas render as the official template lists
tools."""

from __future__ import annotations

import ast
import json

import pytest

from qwen3jax.chat import apply_chat_template, render_with_jinja
from qwen3jax.rewards import sandbox
from qwen3jax.rl import tools as tools_lib
from qwen3jax.rl.tools import ToolEnvironment, ToolError, ToolResponse, calculate
from tests import qwen3_assets

# (expression, the value Python computes for the same expression written as code)
ARITHMETIC = [
    ("2 + 3 * 4", 2 + 3 * 4),
    ("(2 + 3) * 4", (2 + 3) * 4),
    ("7 / 2", 7 / 2),
    ("7 // 2", 7 // 2),
    ("-7 // 2", -7 // 2),
    ("-17 % 5", -17 % 5),
    ("17 % -5", 17 % -5),
    ("-2 ** 2", -2 ** 2),
    ("(-2) ** 3", (-2) ** 3),
    ("2 ** -2", 2 ** -2),
    ("2 ** 3 ** 2", 2 ** 3 ** 2),
    ("2 ** 100", 2 ** 100),
    ("0.1 + 0.2", 0.1 + 0.2),
    ("1e3 * 2.5", 1e3 * 2.5),
    ("3 - -3", 3 - -3),
    ("+5 - +2", +5 - +2),
    ("10 / 4 * 2", 10 / 4 * 2),
    ("1 / 3", 1 / 3),
    ("  12 * 7 ", 12 * 7),
    ("4.0 ** 0.5", 4.0 ** 0.5),
    ("123456789 * 987654321", 123456789 * 987654321),
    ("(1 + 2) * (3 - 4) / 5", (1 + 2) * (3 - 4) / 5),
]  # fmt: skip

REFUSED = [
    ("__import__('os').system('true')", "unsupported"),  # a call: never evaluated
    ("x + 1", "unsupported"),
    ("(1).__class__", "unsupported"),
    ("'ab' * 3", "unsupported"),
    ("True + 1", "unsupported"),
    ("[1, 2]", "unsupported"),
    ("2j * 2", "unsupported"),
    ("1 if 2 else 3", "unsupported"),
    ("1 / 0", "division by zero"),
    ("5 % 0", "division by zero"),
    ("9 ** 9 ** 9", "too large"),  # would take minutes and gigabytes
    ("(2 ** 2000) * (2 ** 2100)", "too large"),  # each factor is allowed, the product is not
    ("10.0 ** 400", "too large"),
    ("(-8) ** 0.5", "not a real number"),
    ("2 +", "not an arithmetic expression"),
    ("(" * 150 + "1" + ")" * 150, "longer than"),
]


@pytest.mark.parametrize(("expression", "expected"), ARITHMETIC)
def test_the_calculator_equals_python_arithmetic(expression, expected):
    value = calculate(expression)
    assert type(value) is type(expected) and value == expected
    assert ToolEnvironment(["calculator"]).respond(_call("calculator", expression=expression)) == [
        ToolResponse(str(expected))
    ]


@pytest.mark.parametrize(("expression", "message"), REFUSED)
def test_the_calculator_refuses_anything_but_bounded_arithmetic(expression, message):
    with pytest.raises(ToolError, match=message) as refused:
        calculate(expression)
    assert refused.value.kind == "failed"


def test_a_huge_power_is_refused_before_it_is_computed(monkeypatch):
    computed = []
    monkeypatch.setitem(tools_lib._BINARY, ast.Pow, lambda a, b: computed.append((a, b)) or a**b)
    for expression in ("3 ** 10000", "9 ** 9 ** 9"):
        with pytest.raises(ToolError, match="too large"):
            calculate(expression)
    assert computed == [(9, 9)]  # only the inner, small power


def _call(name, **arguments):
    return f"<tool_call>\n{json.dumps({'name': name, 'arguments': arguments})}\n</tool_call>"


def test_malformed_calls_get_error_responses_of_their_kind():
    env = ToolEnvironment(["calculator"])
    reply = "\n".join([
        "<think>\n<tool_call>inside the think block: not a call</tool_call>\n</think>\n",
        "<tool_call>\n{\"name\": \"calculator\", \"arguments\": {\"expression\": \"1+\"\n</tool_call>",  # not JSON
        "<tool_call>\n[\"calculator\", \"1 + 1\"]\n</tool_call>",  # JSON, but not a call object
        _call("python", code="print(1)"),  # not among this environment's tools
        _call("calculator", expr="1 + 1"),  # wrong argument name
        _call("calculator", expression=2),  # wrong argument type
        "<tool_call>\n{\"name\": \"calculator\", \"arguments\": \"{\\\"expression\\\": \\\"6 * 7\\\"}\"}\n</tool_call>",
        "<tool_call>\n{\"name\": \"calculator\", \"arguments\": \"not json\"}\n</tool_call>",
        _call("calculator", expression="1 / 0"),
        "<tool_call>\n" + json.dumps({"name": "calculator", "arguments": {"expression": "2 + 2"}}),  # never closed
    ])  # fmt: skip
    responses = env.respond(reply)
    assert [r.error for r in responses] == ["not_json", "not_json", "unknown_tool", "bad_arguments", "bad_arguments",
                                            None, "bad_arguments", "failed", "unclosed"]  # fmt: skip
    assert responses[5].text == "42"  # OpenAI-style arguments as a JSON string
    assert all(r.text.startswith("Error: ") for r in responses if r.error)
    assert "unknown tool 'python'; available: calculator" in responses[2].text
    assert env.count_calls(reply) == len(responses) == 9
    assert env.respond("<think>\n<tool_call>\n</think>\n\nThe answer is 4.") == []


def test_tool_names_are_checked():
    with pytest.raises(KeyError, match="unknown tool 'calc'"):
        ToolEnvironment(["calc"])
    with pytest.raises(ValueError, match="distinct tool names"):
        ToolEnvironment(["calculator", "calculator"])


@pytest.fixture
def sandboxed():
    if not sandbox.is_available():
        pytest.skip(f"the sandbox cannot start here: {sandbox.default_sandbox().unavailable_reason}")


def test_python_runs_in_the_sandbox_and_its_limits_contain_attacks(sandboxed, monkeypatch):
    monkeypatch.setattr(tools_lib, "PYTHON_TIMEOUT_S", 1.0)
    calls = []
    real_run = tools_lib.run_python
    monkeypatch.setattr(tools_lib, "run_python", lambda code, **kw: calls.append(kw) or real_run(code, **kw))
    env = ToolEnvironment(["python"])
    programs = {
        "print(sum(range(10)))": (None, "45\n"),
        # None of our files or variables exist inside.
        "import os; print(os.listdir('/work'), os.path.exists('/root'), 'JAX_PLATFORMS' in os.environ)": (
            None, "[] False False\n"),  # the host's environment (conftest sets JAX_PLATFORMS) is not visible
        "while True: pass": ("failed", "Error: the program was stopped: wall clock > 1 s"),
        "x = bytearray(1 << 30)": ("failed", "MemoryError"),
        "raise ValueError('boom')": ("failed", "ValueError: boom"),
    }  # fmt: skip
    responses = env.respond_all([_call("python", code=code) for code in programs])
    for (code, (error, text)), (response,) in zip(programs.items(), responses):
        assert response.error == error, code
        assert text in response.text, (code, response.text)
    assert calls and all(kw == {"timeout_s": 1.0, "memory_mb": tools_lib.PYTHON_MEMORY_MB} for kw in calls)


def test_python_reports_an_unavailable_sandbox(monkeypatch):
    missing = sandbox.SandboxResult("unavailable", "", "", None, detail="no bwrap binary")
    monkeypatch.setattr(tools_lib, "run_python", lambda code, **kw: missing)
    (response,) = ToolEnvironment(["python"]).respond(_call("python", code="print(1)"))
    assert response == ToolResponse("Error: the python sandbox is unavailable (no bwrap binary)", "unavailable")


def test_schemas_render_as_the_official_template_lists_tools():
    directory = qwen3_assets.qwen3_tokenizer_dir()
    template = json.loads((directory / "tokenizer_config.json").read_text())["chat_template"]
    schemas = ToolEnvironment(["calculator", "python"]).schemas
    messages = [{"role": "user", "content": "What is 12 * 7?"}]
    rendered = render_with_jinja(template, messages, tools=schemas, add_generation_prompt=True)
    assert rendered == apply_chat_template(messages, tools=schemas, add_generation_prompt=True)
    listed = rendered.split("<tools>\n")[1].split("\n</tools>")[0].split("\n")
    def function(name, argument, hint):
        parameters = {"type": "object", "properties": {argument: {"type": "string", "description": hint}},
                      "required": [argument]}  # fmt: skip
        description = tools_lib.TOOLS.get(name).description
        return {"type": "function", "function": {"name": name, "description": description, "parameters": parameters}}

    assert [json.loads(line) for line in listed] == [function("calculator", "expression", "e.g. (3 + 4) * 2"),
                                                     function("python", "code", "the program")]  # fmt: skip

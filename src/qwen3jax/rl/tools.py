"""Tools a policy can call in multi-turn rollouts (general RL, tool use): a registry of named tools, each with the
JSON schema the chat template lists in the system prompt, and the environment that answers a model turn's
`<tool_call>` blocks.

A model turn calls tools the way the Qwen3 template teaches (and vLLM's `hermes` parser reads): after its think
block, one or more `<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>` blocks. Every call gets exactly
one response; a call that cannot be run (not JSON, unknown tool, arguments that do not fit the schema, a block left
open) or that fails (a bad expression, a program that raises or times out) gets an `Error: ...` text instead of a
result and is counted by kind, so bad model output never stops a rollout.

Model text is never evaluated by Python: the calculator walks the expression's syntax tree and only does arithmetic
on number literals, with bounded sizes; python programs run only through `qwen3jax.rewards.sandbox`, with its limits.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from qwen3jax.registry import Registry
from qwen3jax.rewards.sandbox import default_sandbox, run_python

ERROR_KINDS = ("not_json", "unknown_tool", "bad_arguments", "unclosed", "failed", "unavailable")
MAX_RESPONSE_CHARS = 2000  # a tool response longer than this is cut (it goes back into the model's context)


class ToolError(Exception):
    """A call that could not be answered with a result; `kind` is one of ERROR_KINDS."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


@dataclasses.dataclass(frozen=True)
class Tool:
    """name, description and `parameters` (a JSON-schema object) are what the model is shown; `run` maps checked
    arguments to the result text, raising ToolError when it cannot."""

    name: str
    description: str
    parameters: Mapping[str, Any]
    run: Callable[[Mapping[str, Any]], str]

    def schema(self) -> dict[str, Any]:
        """The entry of the chat template's `tools` list (OpenAI function format, as Qwen3 is trained on)."""
        function = {"name": self.name, "description": self.description, "parameters": dict(self.parameters)}
        return {"type": "function", "function": function}


TOOLS: Registry[Tool] = Registry("tool")


def _register_text_tool(name: str, description: str, argument: str, hint: str, run: Callable[[str], str]) -> None:
    """Register a tool of one required string argument."""
    parameters = {"type": "object", "properties": {argument: {"type": "string", "description": hint}},
                  "required": [argument]}  # fmt: skip
    TOOLS.register(name)(Tool(name, description, parameters, lambda args: run(args[argument])))


# ---- calculator -------------------------------------------------------------------------------------------------
MAX_EXPRESSION_CHARS = 200  # also bounds the syntax tree's depth
MAX_INT_BITS = 4096  # integers beyond ~1233 digits are refused (9 ** 9 ** 9 would take minutes and gigabytes)
_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}  # fmt: skip
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}


def calculate(expression: str) -> int | float:
    """The value of an arithmetic expression over int and float literals with + - * / // % ** and parentheses, as
    Python computes it; anything else (names, calls, strings, complex results, huge integers) is a ToolError."""
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise ToolError("failed", f"expression longer than {MAX_EXPRESSION_CHARS} characters")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        raise ToolError("failed", f"not an arithmetic expression: {expression!r}") from None
    return _evaluate(tree.body)


def _evaluate(node: ast.AST) -> int | float:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):  # not bool, str or complex
        return node.value
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_evaluate(node.operand))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(node.op, ast.Pow) and isinstance(left, int) and isinstance(right, int) and abs(left) > 1:
            if right * abs(left).bit_length() > MAX_INT_BITS:  # checked before computing it
                raise ToolError("failed", "result too large")
        try:
            value = _BINARY[type(node.op)](left, right)
        except ZeroDivisionError:
            raise ToolError("failed", "division by zero") from None
        except OverflowError:
            raise ToolError("failed", "result too large") from None
        if isinstance(value, complex):
            raise ToolError("failed", "the result is not a real number")
        if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
            raise ToolError("failed", "result too large")
        return value
    raise ToolError("failed", f"unsupported in an arithmetic expression: {type(node).__name__}")


_register_text_tool("calculator", "Evaluate an arithmetic expression with + - * / // % ** and parentheses.",
                    "expression", "e.g. (3 + 4) * 2", lambda expression: str(calculate(expression)))


# ---- python -----------------------------------------------------------------------------------------------------
PYTHON_TIMEOUT_S = 5.0
PYTHON_MEMORY_MB = 256


def run_program(code: str) -> str:
    """The program's stdout, run in the sandbox (standard library only, no network, no files of ours); a program
    that fails gives its stderr's tail as the error."""
    result = run_python(code, timeout_s=PYTHON_TIMEOUT_S, memory_mb=PYTHON_MEMORY_MB)
    if result.status == "ok":
        return result.stdout
    if result.status == "unavailable":
        raise ToolError("unavailable", f"the python sandbox is unavailable ({result.detail})")
    if result.status == "error":
        raise ToolError("failed", (result.stdout + result.stderr)[-MAX_RESPONSE_CHARS:])
    raise ToolError("failed", f"the program was stopped: {result.detail}")


_register_text_tool("python", "Run a Python program (standard library only) and return what it prints.", "code",
                    "the program", run_program)


# ---- answering a model turn -------------------------------------------------------------------------------------
_CALL = re.compile(r"<tool_call>(.*?)(</tool_call>|\Z)", re.DOTALL)
_JSON_TYPES = {"string": str, "integer": int, "number": (int, float), "boolean": bool, "object": dict, "array": list}


@dataclasses.dataclass(frozen=True)
class ToolResponse:
    """What one call gets back: the tool message's text, and the kind of failure (None when it ran)."""

    text: str
    error: str | None = None


class ToolEnvironment:
    """The tools of a rollout (registered names), their schemas for the prompt, and the answers to model turns."""

    def __init__(self, names: Sequence[str]):
        names = list(names)
        if not names or len(set(names)) != len(names):
            raise ValueError(f"tools must be a non-empty list of distinct tool names, got {names}")
        self.tools = {name: TOOLS.get(name) for name in names}

    @property
    def schemas(self) -> list[dict[str, Any]]:
        return [tool.schema() for tool in self.tools.values()]

    def respond(self, reply: str) -> list[ToolResponse]:
        """One response per `<tool_call>` block of the reply's answer (the text after its think block); [] when the
        turn calls no tool, i.e. it is the final answer."""
        return [self._answer(body, closed=bool(end)) for body, end in _calls(reply)]

    @staticmethod
    def count_calls(reply: str) -> int:
        """How many calls `respond` would answer, without making them."""
        return len(_calls(reply))

    def respond_all(self, replies: Sequence[str]) -> list[list[ToolResponse]]:
        """`respond` for many replies at once (python runs in parallel up to the sandbox's worker count)."""
        with ThreadPoolExecutor(default_sandbox().workers) as pool:
            return list(pool.map(self.respond, replies))

    def _answer(self, body: str, *, closed: bool) -> ToolResponse:
        try:
            if not closed:
                raise ToolError("unclosed", "the <tool_call> block is not closed with </tool_call>")
            name, arguments = self._parse(body)
            text = self.tools[name].run(arguments)
        except ToolError as e:
            return ToolResponse(f"Error: {e}"[:MAX_RESPONSE_CHARS], e.kind)
        return ToolResponse(text[:MAX_RESPONSE_CHARS])

    def _parse(self, body: str) -> tuple[str, dict[str, Any]]:
        try:
            call = json.loads(body)
        except (json.JSONDecodeError, RecursionError):
            raise ToolError("not_json", 'a tool call must be a JSON object {"name": ..., "arguments": {...}}') from None
        if not isinstance(call, dict) or set(call) != {"name", "arguments"}:
            raise ToolError("not_json", 'a tool call must be a JSON object with exactly "name" and "arguments"')
        name, arguments = call["name"], call["arguments"]
        if name not in self.tools:
            raise ToolError("unknown_tool", f"unknown tool {name!r}; available: {', '.join(self.tools)}")
        if isinstance(arguments, str):  # OpenAI style: arguments as a JSON string
            try:
                arguments = json.loads(arguments)
            except (json.JSONDecodeError, RecursionError):
                raise ToolError("bad_arguments", "arguments is a string but not JSON") from None
        _check_arguments(self.tools[name], arguments)
        return name, arguments


def _calls(reply: str) -> list[tuple[str, str]]:
    """(body, closing tag or '') of each `<tool_call>` block after the reply's think block."""
    return _CALL.findall(reply.split("</think>")[-1])


def _check_arguments(tool: Tool, arguments: Any) -> None:
    """The arguments fit the tool's schema: an object with every required property, no other, each of its type."""
    properties = tool.parameters["properties"]
    if not isinstance(arguments, dict):
        raise ToolError("bad_arguments", f"{tool.name}: arguments must be an object")
    missing = [p for p in tool.parameters.get("required", ()) if p not in arguments]
    unknown = [p for p in arguments if p not in properties]
    if missing or unknown:
        raise ToolError("bad_arguments", f"{tool.name}: missing {missing}, unknown {unknown}; takes {list(properties)}")
    for key, value in arguments.items():
        expected = properties[key]["type"]
        if not isinstance(value, _JSON_TYPES[expected]) or (isinstance(value, bool) and expected != "boolean"):
            raise ToolError("bad_arguments", f"{tool.name}: {key!r} must be a {expected}")

"""Code rewards: the completion's program runs in the sandbox against the record's tests.

- `code_io`: stdin/stdout cases `[{"stdin": ..., "stdout": ...}]`; the host compares the outputs, so nothing the
  program prints can fake a pass.
- `code_tests`: assert statements `["assert f(2) == 4", ...]` run after the program, each on its own. The verdicts
  leave the sandbox on one line tagged with a random nonce that is handed to the harness on stdin before the
  program starts, so a program that prints "PASS" (or any results line it makes up) earns nothing, and one that
  exits early leaves no verdicts. (Tests share the program's interpreter: a program written to inspect the
  harness's frames could still read the nonce; stdin/stdout cases have no such channel.)

A program that fails, crashes or times out scores 0 (it was judged). Only a sandbox that cannot start masks the
completion ("sandbox_unavailable").
"""

from __future__ import annotations

import abc
import dataclasses
import json
import re
import secrets
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from qwen3jax.rewards.base import REWARDS, RewardResult, column
from qwen3jax.rewards.format import final_answer
from qwen3jax.rewards.sandbox import SandboxResult, default_sandbox

_FENCE = re.compile(r"```[ \t]*(?:python3?|py)?[ \t]*\n(.*?)```", re.DOTALL | re.IGNORECASE)


def extract_program(completion: str) -> str | None:
    """The last fenced code block of the final answer, or the whole final answer when it has no fence; None when
    the completion has no final answer."""
    answer = final_answer(completion)
    if answer is None:
        return None
    blocks = _FENCE.findall(answer)
    return blocks[-1] if blocks else answer


def outputs_match(got: str, want: str) -> bool:
    """Equal up to trailing whitespace on each line and trailing blank lines."""

    def lines(text: str) -> list[str]:
        return [line.rstrip() for line in text.replace("\r\n", "\n").rstrip().split("\n")]

    return lines(got) == lines(want)


# The harness reads the nonce before the program exists, then runs the program and every test in one namespace.
_HARNESS = """import json as _json, sys as _sys
_nonce = _sys.stdin.readline().strip()
_scope = {{"__name__": "__solution__"}}
_passed = []
try:
    exec(compile({program!r}, "solution.py", "exec"), _scope)
    _loaded = True
except BaseException:
    _loaded = False
for _test in {tests!r}:
    try:
        if not _loaded:
            raise RuntimeError
        exec(compile(_test, "test.py", "exec"), _scope)
        _passed.append(True)
    except BaseException:
        _passed.append(False)
_sys.stdout.flush()
print("\\n" + _nonce + " " + _json.dumps(_passed), flush=True)
"""


def tests_passed(result: SandboxResult, nonce: str, count: int) -> list[bool]:
    """Per-test verdicts from the harness's nonce line (all False when it is missing or malformed)."""
    for line in reversed(result.stdout.splitlines()):
        if line.startswith(nonce + " "):
            try:
                verdicts = json.loads(line[len(nonce) + 1 :])
            except ValueError:
                break
            if isinstance(verdicts, list) and len(verdicts) == count and all(v is True or v is False for v in verdicts):
                return verdicts
            break
    return [False] * count


def _score(passed: Sequence[bool], partial: bool) -> float:
    if not passed:
        return 0.0
    return sum(passed) / len(passed) if partial else float(all(passed))


@dataclasses.dataclass(frozen=True)
class _CodeReward(abc.ABC):
    """partial: score the fraction of tests passed instead of all-or-nothing.
    timeout_s, memory_mb: per sandboxed run."""

    partial: bool = False
    timeout_s: float = 5.0
    memory_mb: int = 512

    name = ""

    @abc.abstractmethod
    def judge(self, program: str, tests: Any) -> float | str:
        """The score of `program` on `tests`, or why it could not be judged (a short tag)."""

    def __call__(self, prompts: Sequence[Any], completions: Sequence[str], **fields) -> RewardResult:
        tests = column(fields, "tests", len(completions), self.name)
        sandbox = default_sandbox()

        def one(completion: str, cases: Any) -> float | str:
            program = extract_program(completion)
            return 0.0 if program is None else self.judge(program, cases)

        with ThreadPoolExecutor(sandbox.workers) as threads:
            return RewardResult.from_judgements(list(threads.map(one, completions, tests)))


@REWARDS.register("code_io")
@dataclasses.dataclass(frozen=True)
class CodeIOReward(_CodeReward):
    """The program's stdout for each case's stdin must match the case's stdout."""

    name = "code_io"

    def judge(self, program: str, cases: Sequence[Mapping[str, str]]) -> float | str:
        passed = []
        for case in cases:
            result = default_sandbox().run(
                program, stdin=case.get("stdin", ""), timeout_s=self.timeout_s, memory_mb=self.memory_mb
            )
            if result.status == "unavailable":
                return "sandbox_unavailable"
            passed.append(result.status == "ok" and outputs_match(result.stdout, case["stdout"]))
            if not passed[-1] and not self.partial:
                break  # all-or-nothing: one failure decides
        return _score(passed + [False] * (len(cases) - len(passed)), self.partial)


@REWARDS.register("code_tests")
@dataclasses.dataclass(frozen=True)
class CodeTestsReward(_CodeReward):
    """Assert-style tests run after the program in one sandboxed interpreter."""

    name = "code_tests"

    def judge(self, program: str, tests: Sequence[str]) -> float | str:
        nonce = secrets.token_hex(16)
        harness = _HARNESS.format(program=program, tests=list(tests))
        result = default_sandbox().run(harness, stdin=nonce + "\n", timeout_s=self.timeout_s, memory_mb=self.memory_mb)
        if result.status == "unavailable":
            return "sandbox_unavailable"
        return _score(tests_passed(result, nonce, len(tests)), self.partial)

"""Math answer checking with `math-verify`, in worker processes under our own wall-clock limit.

math-verify parses LaTeX and plain expressions into sympy (`\\boxed{}`, fractions, percentages, sets, intervals,
units stripped) and compares them symbolically and numerically. Its own time-out uses SIGALRM, which only works on
a process's main thread, and sympy can spin for minutes on a pathological expression; so every check runs in a
worker process of a small pool, and a worker that overruns the limit is killed and replaced. Callers may be on
any thread.

The answer is read from the final answer only: the text after the last `</think>` (a completion that opens a
think block and never closes it has no final answer). An answer that appears only inside the think block scores 0.
"""

from __future__ import annotations

import atexit
import dataclasses
import json
import os
import pathlib
import select
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from qwen3jax.rewards.base import REWARDS, RewardResult, column
from qwen3jax.rewards.format import final_answer

_WORKER = str(pathlib.Path(__file__).with_name("_math_worker.py"))
_STARTUP_S = 120.0


class _Worker:
    """One worker process speaking JSON lines over its stdin/stdout."""

    def __init__(self):
        self.process = subprocess.Popen(
            [sys.executable, "-I", _WORKER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1
        )
        self._buffer = ""
        # Imports (sympy, math-verify) take seconds on a busy machine; they must not eat a request's time-out.
        if self._read(_STARTUP_S) is None:
            self.kill()
            raise RuntimeError(f"the math-verify worker did not start within {_STARTUP_S} s")

    def ask(self, answer: str | None, gold: str, timeout_s: float) -> dict | None:
        """The worker's reply, or None when none came within `timeout_s` (or the worker died)."""
        self.process.stdin.write(json.dumps({"answer": answer, "gold": gold}) + "\n")
        self.process.stdin.flush()
        return self._read(timeout_s)

    def _read(self, timeout_s: float) -> dict | None:
        deadline = time.monotonic() + timeout_s
        fd = self.process.stdout.fileno()
        while "\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return None
            data = os.read(fd, 1 << 16)
            if not data:
                return None
            self._buffer += data.decode()
        line, self._buffer = self._buffer.split("\n", 1)
        return json.loads(line)

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()
        self.process.stdin.close()
        self.process.stdout.close()

    def close(self) -> None:
        self.process.stdin.close()  # the worker sees EOF and exits
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process.stdout.close()


class VerifierPool:
    """math-verify worker processes; each call takes an idle worker (starting one if needed, at most
    `workers`), waits at most `timeout_s` and kills the worker when it overruns."""

    def __init__(self, workers: int = 2, timeout_s: float = 10.0):
        if workers < 1 or not timeout_s > 0:
            raise ValueError(f"workers must be >= 1 and timeout_s > 0, got {workers}, {timeout_s}")
        self.workers, self.timeout_s = workers, timeout_s
        self._idle: list[_Worker] = []
        self._slots = threading.BoundedSemaphore(workers)
        self._lock = threading.Lock()
        self.timeouts = self.errors = 0

    def check(self, completion: str, gold: str, timeout_s: float | None = None) -> tuple[float | None, str | None]:
        """(score or None, reason when None: 'unparsable_gold', 'timeout' or 'verifier_error')."""
        answer = final_answer(completion)
        with self._slots:
            with self._lock:
                worker = self._idle.pop() if self._idle else None
            worker = worker or _Worker()
            reply = worker.ask(answer, gold, timeout_s or self.timeout_s)
            if reply is None:
                worker.kill()
                self.timeouts += 1
                return None, "timeout"
            with self._lock:
                self._idle.append(worker)
        if "error" in reply:
            self.errors += 1
            return None, "verifier_error"
        score = reply["score"]
        return score, (None if score is not None else "unparsable_gold")

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for worker in idle:
            worker.close()


_POOL: VerifierPool | None = None
_POOL_LOCK = threading.Lock()


def default_pool() -> VerifierPool:
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = VerifierPool()
            atexit.register(_POOL.close)
        return _POOL


def verify_answer(completion: str, gold: str, *, timeout_s: float | None = None) -> float | None:
    """1.0 when the final answer of `completion` equals `gold` mathematically, 0.0 when not, None when it cannot
    be judged (unparsable gold, verifier crash, time-out)."""
    if not isinstance(completion, str) or not isinstance(gold, str):
        raise TypeError(f"completion and gold must be str, got {type(completion).__name__}, {type(gold).__name__}")
    return default_pool().check(completion, gold, timeout_s)[0]


@REWARDS.register("math")
@dataclasses.dataclass(frozen=True)
class MathReward:
    """1 when the final answer matches the record's `gold` (math-verify), else 0; masked when it cannot judge."""

    timeout_s: float = 10.0

    def __call__(self, prompts: Sequence[Any], completions: Sequence[str], **fields) -> RewardResult:
        golds = column(fields, "gold", len(completions), "math")
        pool = default_pool()
        with ThreadPoolExecutor(pool.workers) as threads:
            checks = list(threads.map(lambda c, g: pool.check(c, str(g), self.timeout_s), completions, golds))
        return RewardResult.from_judgements([reason if score is None else score for score, reason in checks])

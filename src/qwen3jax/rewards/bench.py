"""Verifier throughput for `make bench`: math answers/s (math-verify workers), sandboxed programs/s with a pool of
2, and the sandbox's overhead per program against a bare `python -c` of the same interpreter."""

from __future__ import annotations

import statistics
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

from qwen3jax.data.corpus.verifiable import verifiable_records
from qwen3jax.rewards.math import VerifierPool
from qwen3jax.rewards.sandbox import Sandbox, SandboxConfig

_PROGRAM = "print(sum(i * i for i in range(1000)))"


def math_answers_per_second(count: int = 128, workers: int = 2) -> float:
    """Distinct embedded problems, half answered right and half wrong, checked by `workers` warm workers."""
    records = verifiable_records("math", "eval", count)
    answers = [r["gold"] if i % 2 else r["gold"] + "1" for i, r in enumerate(records)]
    cases = [(f"</think>\\boxed{{{answer}}}", r["gold"]) for answer, r in zip(answers, records)]
    pool = VerifierPool(workers=workers)
    try:
        with ThreadPoolExecutor(workers) as threads:
            list(threads.map(lambda _: pool.check("</think>1", "1"), range(workers)))  # start the workers
            start = time.perf_counter()
            results = list(threads.map(lambda c: pool.check(*c), cases))
            elapsed = time.perf_counter() - start
    finally:
        pool.close()
    if any(score is None for score, _ in results):
        raise RuntimeError(f"math bench: a check could not judge: {results}")
    return count / elapsed


def sandbox_figures(count: int = 40, workers: int = 2) -> dict[str, float]:
    """Programs/s through a pool of `workers`, and the median wall time of one program in the sandbox vs bare."""
    box = Sandbox(SandboxConfig(workers=workers))
    if box.unavailable_reason:
        raise RuntimeError(f"sandbox bench: {box.unavailable_reason}")
    start = time.perf_counter()
    results = box.map([_PROGRAM] * count)
    throughput = count / (time.perf_counter() - start)
    if any(r.status != "ok" for r in results):
        raise RuntimeError(f"sandbox bench: a run failed: {[r for r in results if r.status != 'ok'][:1]}")
    sandboxed, bare = [], []
    for _ in range(15):  # alternate, so both see the same machine load
        t = time.perf_counter()
        box.run(_PROGRAM)
        sandboxed.append(time.perf_counter() - t)
        t = time.perf_counter()
        subprocess.run([box.config.python, "-I", "-c", _PROGRAM], capture_output=True, check=True)
        bare.append(time.perf_counter() - t)
    return {
        "programs_per_s": throughput, "sandboxed_s": statistics.median(sandboxed), "bare_s": statistics.median(bare)
    }  # fmt: skip


def run() -> None:
    print(f"math-verify: {math_answers_per_second():.1f} answers/s (2 worker processes, embedded eval problems)",
          flush=True)  # fmt: skip
    figures = sandbox_figures()
    overhead_ms = (figures["sandboxed_s"] - figures["bare_s"]) * 1000
    print(f"sandbox: {figures['programs_per_s']:.1f} programs/s (pool of 2); one program "
          f"{figures['sandboxed_s'] * 1000:.0f} ms sandboxed vs {figures['bare_s'] * 1000:.0f} ms bare `python -c`: "
          f"overhead {overhead_ms:.0f} ms (target < 150 ms)", flush=True)  # fmt: skip


if __name__ == "__main__":
    run()

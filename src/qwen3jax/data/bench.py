"""Throughput of the pretraining data pipeline (single process, embedded corpus), for `make bench`."""

from __future__ import annotations

import time

from qwen3jax.data.pipeline import build_pretrain_iterator
from qwen3jax.data.stages import STAGES


def pipeline_throughput(
    stage: str = "s1", *, seq_len: int = 1024, batch_size: int = 8, seconds: float = 5.0, warmup_batches: int = 5
) -> float:
    """Tokens per second (batch slots, padding included: what a train step consumes) that the `stage` pipeline
    delivers on the embedded corpus, measured over about `seconds` after `warmup_batches` batches (the first
    batches include reader start-up). Building the corpus and default tokenizer is cached and not timed."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; expected one of {sorted(STAGES)}")
    iterator = build_pretrain_iterator(
        STAGES[stage](), seq_len=seq_len, batch_size=batch_size, seed=0, process_index=0, process_count=1
    )
    for _ in range(warmup_batches):
        next(iterator)
    tokens, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        tokens += next(iterator)["tokens"].size
    return tokens / elapsed


def run() -> None:
    """`make bench` section: throughput of every stage's default pipeline, against the tokens/s the tiny S1 train
    step consumes (measured now), which the pipeline must exceed at least 10x."""
    import numpy as np

    from experiments import pretrain_s1
    from qwen3jax.model import ModelConfig
    from qwen3jax.model.bench import timed
    from qwen3jax.train.bench import ours_train

    c = pretrain_s1.get_config("tiny")
    tokens = np.random.default_rng(0).integers(0, c.model.vocab_size, (c.global_batch, c.seq_len))
    consumed = c.global_batch * c.seq_len / timed(ours_train(ModelConfig.from_dict(c.model.to_dict()), tokens))
    print(f"tiny S1 train step consumes {consumed:,.0f} tokens/s", flush=True)
    for name in STAGES:
        produced = pipeline_throughput(name)
        print(f"data pipeline {name}: {produced:,.0f} tokens/s (seq_len 1024, batch 8) = {produced / consumed:.0f}x "
              f"the tiny train step", flush=True)  # fmt: skip


if __name__ == "__main__":
    run()

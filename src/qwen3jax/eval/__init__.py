"""Evaluation harness: tasks (built-in held-out sets, user JSONL, known public layouts), multiple choice by
log-likelihood, generation scored by registered rewards (pass@k, mean@k), thinking-budget curves, cached results.
Command line: `python -m qwen3jax.eval` (see `__main__.py`)."""

"""Batched generation for Qwen3: greedy / temperature / top-k / top-p / presence-penalty sampling over a KV cache,
n samples per prompt sharing one prefill, per-row stop ids and thinking budgets, all in one compiled loop.

    from qwen3jax.sample import ThinkingTokens, generate
    result = generate(model, [prompt_ids], max_new_tokens=256, temperature=0.6, top_p=0.95, top_k=20,
                      stop_ids=[im_end_id], thinking_budget=128, thinking=ThinkingTokens.from_tokenizer(tok),
                      vocab_limit=tok.vocab_size)
    result.tokens[0], result.logprobs[0], result.raw_logprobs[0], result.finish_reason[0]
"""

from qwen3jax.sample.budget import STOP_THINKING_TEXT, ThinkingTokens
from qwen3jax.sample.engine import bucket, generate
from qwen3jax.sample.result import GenerationResult

__all__ = ["STOP_THINKING_TEXT", "GenerationResult", "ThinkingTokens", "bucket", "generate"]

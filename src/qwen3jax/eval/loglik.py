"""Log-likelihood of continuations given contexts, for multiple-choice tasks scored by the model's own probabilities.

Each (context, continuation) pair is one row: the tokens `context + continuation`, right-padded; one forward pass
per batch of rows through the model's decoder and LM head (`Qwen3.head`, reduced slice by slice with the training
loss's `token_cross_entropy`, so the [B, T, V] logits never exist at once). A row's score is the summed log-prob of
its continuation tokens, each predicted from everything before it. Shapes are bucketed to powers of two (rows and
length) so a task compiles a handful of programs.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np
from flax import nnx

from qwen3jax.model import Qwen3
from qwen3jax.sample.engine import bucket
from qwen3jax.train.losses import token_cross_entropy

MIN_LENGTH_BUCKET = 16


@dataclasses.dataclass(frozen=True)
class ContinuationScore:
    logprob: float  # Σ log p(continuation token | everything before it)
    tokens: int  # continuation length in tokens
    greedy: bool  # every continuation token is the model's argmax


@functools.partial(nnx.jit, static_argnames=("vocab_slices",))
def _score_rows(model: Qwen3, tokens_BT, segments_BT, targets_BT, scored_BT, *, vocab_slices: int):
    hidden_BTD = model(tokens_BT, segment_ids=segments_BT, head=False)
    scores = token_cross_entropy(model.head(hidden_BTD, vocab_slices), targets_BT)
    logprob_B = jnp.sum(jnp.where(scored_BT, -scores.ce, 0.0), axis=1)
    greedy_B = jnp.all(~scored_BT | (scores.argmax == targets_BT), axis=1)
    return logprob_B, greedy_B


def score_continuations(
    model: Qwen3, pairs: Sequence[tuple[Sequence[int], Sequence[int]]], *, batch_size: int = 16, vocab_slices: int = 1
) -> list[ContinuationScore]:
    """The score of each (context ids, continuation ids) pair; both must be non-empty and fit the model's context."""
    context_limit = model.config.max_position_embeddings
    for i, (context, continuation) in enumerate(pairs):
        if not context or not continuation:
            raise ValueError(f"pair {i}: the context and the continuation must both be non-empty token lists")
        if len(context) + len(continuation) > context_limit:
            raise ValueError(
                f"pair {i}: {len(context) + len(continuation)} tokens exceed the model's context of {context_limit}"
            )
    out: list[ContinuationScore] = []
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        rows = bucket(len(chunk), 1)
        width = min(bucket(max(len(c) + len(x) for c, x in chunk), MIN_LENGTH_BUCKET), context_limit)
        tokens = np.zeros((rows, width), np.int32)
        segments = np.zeros((rows, width), np.int32)
        scored = np.zeros((rows, width), bool)
        for row, (context, continuation) in enumerate(chunk):
            sequence = list(context) + list(continuation)
            tokens[row, : len(sequence)] = sequence
            segments[row, : len(sequence)] = 1
            scored[row, len(context) - 1 : len(sequence) - 1] = True  # position t predicts token t + 1
        targets = np.concatenate([tokens[:, 1:], np.zeros((rows, 1), np.int32)], axis=1)
        logprob, greedy = _score_rows(
            model, jnp.asarray(tokens), jnp.asarray(segments), jnp.asarray(targets), jnp.asarray(scored),
            vocab_slices=vocab_slices,
        )
        logprob, greedy = np.asarray(logprob), np.asarray(greedy)
        out.extend(ContinuationScore(float(logprob[r]), len(chunk[r][1]), bool(greedy[r])) for r in range(len(chunk)))
    return out

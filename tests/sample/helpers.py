"""References for the generation tests: decoding and scoring by plain full forward passes (no KV cache), and an
independent NumPy implementation of the sampling distribution."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from flax import nnx

from qwen3jax.model import Qwen3

from ..model.helpers import DENSE, MOE, build  # noqa: F401  (re-exported for the sample tests)

# A model whose next-token distributions are peaked enough for top-k / top-p to cut deep into the vocabulary.
PEAKED = DENSE.replace(init_std=0.3)


@nnx.jit
def _forward(model: Qwen3, tokens, segment_ids):
    return model(tokens, segment_ids=segment_ids)


def full_forward_logits(model: Qwen3, sequences: list[list[int]], width: int) -> np.ndarray:
    """[len(sequences), width, V] logits of each sequence run alone (right padding never reaches earlier tokens)."""
    tokens = np.zeros((len(sequences), width), np.int32)
    segments = np.zeros((len(sequences), width), np.int32)
    for row, seq in enumerate(sequences):
        tokens[row, : len(seq)] = seq
        segments[row, : len(seq)] = 1
    return np.asarray(_forward(model, jnp.asarray(tokens), jnp.asarray(segments)))


def greedy_by_full_forward(model: Qwen3, prompts: list[list[int]], steps: int) -> list[list[int]]:
    """Argmax decoding, recomputing the whole sequence at every step."""
    sequences = [list(p) for p in prompts]
    width = max(len(p) for p in prompts) + steps
    for _ in range(steps):
        logits = full_forward_logits(model, sequences, width)
        for row, seq in enumerate(sequences):
            seq.append(int(np.argmax(logits[row, len(seq) - 1])))
    return [seq[len(p) :] for seq, p in zip(sequences, prompts)]


def step_logits(model: Qwen3, prompt: list[int], generated: list[int], width: int) -> np.ndarray:
    """[len(generated), V]: the logits each generated token was chosen from, by one full forward pass."""
    logits = full_forward_logits(model, [list(prompt) + list(generated)], width)[0]
    return logits[len(prompt) - 1 : len(prompt) - 1 + len(generated)]


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def sampling_log_probs(
    logits: np.ndarray, seen: set[int], *, temperature, top_k, top_p, presence_penalty
) -> np.ndarray:
    """The sampling distribution of one step in float64: penalty on already generated tokens, temperature, then the
    k most likely tokens, then the shortest most-likely-first prefix of those reaching mass top_p. -inf = excluded."""
    z = logits.astype(np.float64).copy()
    z[list(seen)] -= presence_penalty
    z /= temperature
    order = np.argsort(-z, kind="stable")
    if top_k is not None:
        order = order[:top_k]
    if top_p is not None:
        p = np.exp(log_softmax(z[order]))
        before = np.concatenate([[0.0], np.cumsum(p)[:-1]])
        order = order[before < top_p]
    out = np.full(z.shape, -np.inf)
    out[order] = log_softmax(z[order])
    return out

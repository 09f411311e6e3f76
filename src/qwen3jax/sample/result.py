"""What `generate` returns."""

from __future__ import annotations

import dataclasses
from typing import Literal

import numpy as np

FinishReason = Literal["stop", "length"]


@dataclasses.dataclass(frozen=True)
class GenerationResult:
    """One entry per sample, prompt-major (sample j of prompt i is entry i * n + j).

    tokens[i]        generated ids, prompt excluded, ending with the stop id when the row stopped on one.
    logprobs[i]      float32 log-prob of each token under the sampling distribution it was drawn from (after the
                     presence penalty, temperature, top-k and top-p); 0 under greedy decoding and for tokens forced
                     by the thinking budget, whose policy puts all mass on them.
    raw_logprobs[i]  float32 log-prob of each token under the raw model (temperature 1, no filtering or penalty).
    forced[i]        bool, True where the token was force-fed stop-thinking text rather than chosen by the model.
    finish_reason[i] "stop" (emitted a stop id) or "length" (reached max_new_tokens).
    lengths[i]       len(tokens[i]).
    """

    tokens: list[list[int]]
    logprobs: list[np.ndarray]
    raw_logprobs: list[np.ndarray]
    forced: list[np.ndarray]
    finish_reason: list[FinishReason]
    lengths: list[int]

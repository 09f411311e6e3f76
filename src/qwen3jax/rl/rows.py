"""Training rows of a rollout batch: one row per completion, the prompt followed by the sampled completion.

Row fields (all [rows, seq_len], per-token arrays aligned with `tokens`):
- `tokens`, `segment_ids` (1 on the prompt and completion, 0 on padding), `positions`, as packed text rows;
- `loss_mask`: 1 on the completion tokens the policy chose: not the prompt, not padding, not the tokens given in
  `forced` (text the thinking budget forced; in multi-turn rollouts also the tool responses and chat markup between
  turns), not completions whose reward could not be judged or whose group carries no signal;
- `sampled_mask`: 1 on every completion token the policy chose, trained or not (the loss's `entropy` metric: a batch
  whose groups carry no signal still reports its policy's entropy);
- `old_logprobs`: the sampler's log-probability of each completion token (0 elsewhere), the denominator of the
  importance ratio; `ref_logprobs` are computed by the loss from the frozen reference, not stored here;
- `advantages` [rows]: the completion's group-relative advantage.
As in pretraining, the loss reads position t's prediction of token t + 1 where `loss_mask[t + 1]` is set.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def rollout_rows(
    prompts: Sequence[Sequence[int]],
    completions: Sequence[Sequence[int]],
    sampled_logprobs: Sequence[np.ndarray],
    forced: Sequence[np.ndarray],
    advantages: np.ndarray,
    trained: np.ndarray,
    *,
    seq_len: int,
) -> dict[str, np.ndarray]:
    """Rows for `len(completions)` completions; `prompts[i]` is completion i's prompt (repeat a prompt for its
    group). A row that does not fit `seq_len` is an error: the rollout's lengths are bounded by construction."""
    rows = len(completions)
    if not (len(prompts) == len(sampled_logprobs) == len(forced) == len(advantages) == len(trained) == rows):
        raise ValueError("prompts, completions, log-probs, forced flags, advantages and trained must align")
    out = {
        "tokens": np.zeros((rows, seq_len), np.int32),
        "segment_ids": np.zeros((rows, seq_len), np.int32),
        "positions": np.zeros((rows, seq_len), np.int32),
        "loss_mask": np.zeros((rows, seq_len), np.int32),
        "sampled_mask": np.zeros((rows, seq_len), np.int32),
        "old_logprobs": np.zeros((rows, seq_len), np.float32),
        "advantages": np.asarray(advantages, np.float32).reshape(rows),
    }
    for i, (prompt, completion) in enumerate(zip(prompts, completions)):
        p, c = len(prompt), len(completion)
        if p + c > seq_len:
            raise ValueError(f"row {i}: prompt {p} + completion {c} tokens exceed seq_len={seq_len}")
        out["tokens"][i, :p] = prompt
        out["tokens"][i, p : p + c] = completion
        out["segment_ids"][i, : p + c] = 1
        out["positions"][i, : p + c] = np.arange(p + c)
        out["old_logprobs"][i, p : p + c] = sampled_logprobs[i][:c]
        out["sampled_mask"][i, p : p + c] = ~np.asarray(forced[i][:c], bool)
        if trained[i]:
            out["loss_mask"][i, p : p + c] = out["sampled_mask"][i, p : p + c]
    return out

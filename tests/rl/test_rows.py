"""Rollout rows: exact layout of a hand-made batch (prompt, completion, padding, forced tokens, untrained rows)."""

import numpy as np
import pytest

from qwen3jax.rl.rows import rollout_rows


def test_rollout_rows_layout():
    prompts = [[5, 6, 7], [5, 6, 7], [9]]
    completions = [[10, 11], [12, 13, 14], [15]]
    logprobs = [np.array([-0.1, -0.2]), np.array([-0.3, -0.4, -0.5]), np.array([-0.6])]
    forced = [np.array([0, 0]), np.array([0, 1, 0]), np.array([0])]
    rows = rollout_rows(prompts, completions, logprobs, forced, np.array([1.0, -1.0, 0.5]),
                        np.array([True, True, False]), seq_len=7)  # fmt: skip
    np.testing.assert_array_equal(rows["tokens"], [[5, 6, 7, 10, 11, 0, 0], [5, 6, 7, 12, 13, 14, 0], [9, 15, 0, 0, 0, 0, 0]])
    np.testing.assert_array_equal(rows["segment_ids"], [[1, 1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1, 0], [1, 1, 0, 0, 0, 0, 0]])
    np.testing.assert_array_equal(rows["positions"], [[0, 1, 2, 3, 4, 0, 0], [0, 1, 2, 3, 4, 5, 0], [0, 1, 0, 0, 0, 0, 0]])
    # Completion tokens only; the forced token 13 and the untrained third row get no loss.
    np.testing.assert_array_equal(rows["loss_mask"], [[0, 0, 0, 1, 1, 0, 0], [0, 0, 0, 1, 0, 1, 0], [0] * 7])
    # Every chosen completion token, trained or not (the entropy metric's tokens).
    np.testing.assert_array_equal(rows["sampled_mask"], [[0, 0, 0, 1, 1, 0, 0], [0, 0, 0, 1, 0, 1, 0], [0, 1, 0, 0, 0, 0, 0]])
    np.testing.assert_allclose(rows["old_logprobs"][1], [0, 0, 0, -0.3, -0.4, -0.5, 0])
    np.testing.assert_allclose(rows["advantages"], [1.0, -1.0, 0.5])
    with pytest.raises(ValueError, match="row 1: prompt 3 \\+ completion 3 tokens exceed seq_len=5"):
        rollout_rows(prompts, completions, logprobs, forced, np.zeros(3), np.ones(3, bool), seq_len=5)

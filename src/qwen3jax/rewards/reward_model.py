"""Model-based reward without a reference: a trained reward model (`experiments/reward_model.py`) scores each
completion of a prompt with its scalar head (the `pairwise` loss's `sequence_rewards`), read at the end of the
prompt + completion rendered as a chat (`rl.preference.completion_tokens`, as in training).

The reward model is a run directory (or one of its step directories) of a `pairwise` run, whose config gives the
head token and the length it was trained on, or a native checkpoint with `head_token` given. It is loaded once as a
frozen model; scores are the raw scalars (Bradley–Terry logits: only differences are meaningful, so group-relative
advantages suit them), or σ(r / temperature) in [0, 1] with `squash=True`.
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from qwen3jax.rewards.base import REWARDS, RewardResult


def _run_settings(path: str) -> tuple[int | None, int | None]:
    """(head_token, per-sequence length) from the training run of `path`, or (None, None) for a native checkpoint."""
    from qwen3jax.convert import native

    if (pathlib.Path(path) / native.CONFIG).is_file():
        return None, None
    config = json.loads((native.training_run_of(path) / "config.json").read_text())
    if config.get("loss", {}).get("name") != "pairwise":
        raise ValueError(f"{path} was trained with loss {config.get('loss', {}).get('name')!r}, not 'pairwise': it "
                         f"is not a reward model")  # fmt: skip
    return config["loss"].get("head_token"), config["seq_len"] // 2


@REWARDS.register("reward_model")
class RewardModelReward:
    """The scalar reward of a frozen reward model for every completion (no reference needed).

    Options: `checkpoint` (a `pairwise` run directory or step, or a native checkpoint), `tokenizer` (when the
    checkpoint has none of its own), `head_token` (default: the run's), `max_len` (tokens kept from the end of each
    sequence; default: the run's per-sequence length), `batch_size`, `squash`/`temperature`.
    """

    def __init__(self, *, checkpoint: str, tokenizer: str | None = None, head_token: int | None = None,
                 max_len: int | None = None, batch_size: int = 16, squash: bool = False, temperature: float = 1.0):  # fmt: skip
        import argparse

        import jax
        from flax import nnx

        from qwen3jax.sample import cli
        from qwen3jax.train.losses import sequence_rewards

        run_head, run_len = _run_settings(checkpoint)
        self.head_token = run_head if head_token is None else head_token
        self.max_len = max_len or run_len or 1024
        if batch_size < 1 or temperature <= 0:
            raise ValueError(f"need batch_size >= 1 and temperature > 0, got {batch_size}, {temperature}")
        self.batch_size, self.squash, self.temperature = batch_size, squash, temperature
        chat = cli.load(argparse.Namespace(ckpt=checkpoint, hf=None, tokenizer=tokenizer))
        self.tokenizer = chat.tokenizer
        graphdef, params = nnx.split(chat.model)
        head = self.head_token

        def score(params, tokens, segment_ids):
            rewards, _ = sequence_rewards(nnx.merge(graphdef, params), {"tokens": tokens, "segment_ids": segment_ids},
                                          head, segments=(1,))  # fmt: skip
            return rewards[:, 0]

        self._params, self._score = params, jax.jit(score)

    def score_ids(self, sequences: Sequence[Sequence[int]]) -> np.ndarray:
        """Raw rewards [N] of token sequences, in batches padded to a multiple of 64 tokens (few compilations)."""
        out = []
        for start in range(0, len(sequences), self.batch_size):
            chunk = [list(s)[-self.max_len :] for s in sequences[start : start + self.batch_size]]
            width = -(-max(len(s) for s in chunk) // 64) * 64
            tokens = np.zeros((self.batch_size, width), np.int32)
            segments = np.zeros((self.batch_size, width), np.int32)
            for row, ids in enumerate(chunk):
                tokens[row, : len(ids)], segments[row, : len(ids)] = ids, 1
            out.append(np.asarray(self._score(self._params, tokens, segments))[: len(chunk)])
        return np.concatenate(out) if out else np.zeros(0, np.float32)

    def __call__(self, prompts: Sequence[Any], completions: Sequence[str], **fields) -> RewardResult:
        from qwen3jax.rl.preference import completion_tokens

        del fields  # no reference needed
        if len(prompts) != len(completions):
            raise ValueError(f"reward_model: {len(prompts)} prompts for {len(completions)} completions")
        ids = [completion_tokens(self.tokenizer, p, c) for p, c in zip(prompts, completions)]
        rewards = self.score_ids(ids).astype(np.float64)
        if self.squash:
            rewards = 1.0 / (1.0 + np.exp(-rewards / self.temperature))
        return RewardResult.from_judgements([float(r) for r in rewards])

"""Model-based reward without a reference: a trained reward model (`experiments/reward_model.py`) scores each
completion of a prompt with its scalar head (the `pairwise` loss's `sequence_rewards`), read at the end of the
prompt + completion rendered as a chat (`rl.preference.completion_tokens`, as in training).

In a run the reward model is one of the run's frozen models (`frozen: {reward_model: {path: ...}}`, loaded by
`train/frozen.py` onto the run's mesh with the trained model's shardings, once, and shared with the train step);
the reward names it (`{"name": "reward_model", "frozen": "reward_model"}`) and reads the run's tokenizer (a frozen
model shares the trained model's vocabulary). Outside a run (curation scripts, a notebook) `checkpoint=` loads it
on the default device. The path is a `pairwise` run directory (or one of its step directories), whose config
gives the head token and the length it was trained on, or a native/HF checkpoint with `head_token` given.

Scores are the raw scalars (Bradley–Terry logits: only differences are meaningful, so group-relative advantages
suit them), or σ(r / temperature) in [0, 1] with `squash=True`.
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from qwen3jax.rewards.base import REWARDS, LentModel, RewardResult


def _run_settings(path: str) -> tuple[int | None, int | None]:
    """(head_token, per-sequence length) from the training run of `path`, or (None, None) for a native or HF
    checkpoint (no run config: the head token is an option)."""
    from qwen3jax.convert import native
    from qwen3jax.train.frozen import weights_kind

    if weights_kind(path) != "run":
        return None, None
    config = json.loads((native.training_run_of(path) / "config.json").read_text())
    if config.get("loss", {}).get("name") != "pairwise":
        raise ValueError(f"{path} was trained with loss {config.get('loss', {}).get('name')!r}, not 'pairwise': it "
                         f"is not a reward model")  # fmt: skip
    return config["loss"].get("head_token"), config["seq_len"] // 2


def _checkpoint_model(checkpoint: str, tokenizer: str | None) -> LentModel:
    """A reward model loaded by itself on the default device (use outside a run)."""
    import argparse

    from flax import nnx

    from qwen3jax.sample import cli
    from qwen3jax.train.step import FrozenModel

    chat = cli.load(argparse.Namespace(ckpt=checkpoint, hf=None, tokenizer=tokenizer))
    graphdef, params = nnx.split(chat.model, nnx.Param)
    return LentModel(FrozenModel(nnx.to_pure_dict(params), graphdef), checkpoint, chat.tokenizer)


@REWARDS.register("reward_model")
class RewardModelReward:
    """The scalar reward of a frozen reward model for every completion (no reference needed).

    Options: `frozen` (in a run: the name of the run's frozen model that is the reward model) or `checkpoint` (outside
    a run: a `pairwise` run directory or step, or a native checkpoint; `tokenizer` when it has none of its own),
    `head_token` (default: the run's), `max_len` (tokens kept from the end of each sequence; default: the run's
    per-sequence length), `batch_size`, `squash`/`temperature`. `lent` is what `build_reward` resolves `frozen` to.
    """

    def __init__(self, *, lent: LentModel | None = None, checkpoint: str | None = None, tokenizer: str | None = None,
                 head_token: int | None = None, max_len: int | None = None, batch_size: int = 16,
                 squash: bool = False, temperature: float = 1.0):  # fmt: skip
        import jax

        from qwen3jax.train.losses import sequence_rewards

        if (lent is None) == (checkpoint is None):
            raise ValueError("reward_model needs frozen=<the run's frozen model holding it> in a run, or checkpoint= "
                             "outside one (exactly one of them)")  # fmt: skip
        if lent is not None and tokenizer is not None:
            raise ValueError("reward_model: a frozen model reads the run's tokenizer; tokenizer= is for checkpoint=")
        if batch_size < 1 or temperature <= 0:
            raise ValueError(f"need batch_size >= 1 and temperature > 0, got {batch_size}, {temperature}")
        run_head, run_len = _run_settings(lent.path if lent else checkpoint)  # before loading: refuse a non-RM first
        lent = lent or _checkpoint_model(checkpoint, tokenizer)
        self.head_token = run_head if head_token is None else head_token
        self.max_len = max_len or run_len or 1024
        self.batch_size, self.squash, self.temperature = batch_size, squash, temperature
        self.tokenizer, self.model = lent.tokenizer, lent.frozen
        head = self.head_token

        def score(frozen, tokens, segment_ids):
            batch = {"tokens": tokens, "segment_ids": segment_ids}
            rewards, _ = sequence_rewards(frozen.model(), batch, head, segments=(1,))
            return rewards[:, 0]

        self._score = jax.jit(score)

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
            out.append(np.asarray(self._score(self.model, tokens, segments))[: len(chunk)])
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

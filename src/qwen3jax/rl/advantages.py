"""Group-relative advantages and reward shaping for GRPO-family RL (SPEC §6), computed on the host from the
rewards of one rollout batch: `n` completions per prompt form a group.

A completion whose reward could not be judged (`RewardResult.mask` false) takes no part in its group's statistics
and gets no loss; a group with fewer than two judged completions, or whose judged rewards are all equal, carries no
learning signal (advantage 0) and is reported, so dynamic sampling can drop and refill it.
"""

from __future__ import annotations

import dataclasses

import numpy as np

SCALES = ("std", "none")  # "std": GRPO's (r - mean) / (std + eps); "none": Dr. GRPO's r - mean


@dataclasses.dataclass(frozen=True)
class GroupAdvantages:
    advantages: np.ndarray  # [G, N] float32; 0 for unjudged completions and signal-less groups
    trained: np.ndarray  # [G, N] bool: judged completions of groups with a signal
    zero_std: np.ndarray  # [G] bool: groups without a signal (fewer than 2 judged, or equal rewards)


def group_advantages(rewards_GN: np.ndarray, judged_GN: np.ndarray, *, scale: str = "std", eps: float = 1e-6) -> GroupAdvantages:
    """Advantages of `N` completions in each of `G` groups. The std is the unbiased sample std (ddof 1, as TRL's
    GRPO trainer computes it) over the group's judged completions."""
    if scale not in SCALES:
        raise ValueError(f"advantage scale must be one of {SCALES}, got {scale!r}")
    rewards = np.asarray(rewards_GN, np.float64)
    judged = np.asarray(judged_GN, bool)
    if rewards.ndim != 2 or rewards.shape != judged.shape:
        raise ValueError(f"rewards {rewards.shape} and judged {judged.shape} must both be [groups, samples]")
    count = judged.sum(axis=1)
    safe = np.where(judged, rewards, 0.0)
    mean = safe.sum(axis=1) / np.maximum(count, 1)
    centred = np.where(judged, rewards - mean[:, None], 0.0)
    std = np.sqrt((centred**2).sum(axis=1) / np.maximum(count - 1, 1))
    zero_std = (count < 2) | (std <= eps)
    divisor = std + eps if scale == "std" else np.ones_like(std)
    advantages = centred / np.where(zero_std, 1.0, divisor)[:, None]
    trained = judged & ~zero_std[:, None]
    return GroupAdvantages(np.where(trained, advantages, 0.0).astype(np.float32), trained, zero_std)


def overlong_penalty(lengths: np.ndarray, *, max_tokens: int, cache_tokens: int) -> np.ndarray:
    """DAPO's soft overlong punishment: 0 up to `max_tokens - cache_tokens`, then falling linearly to -1 at
    `max_tokens` (and -1 beyond), added to the reward so that length grows only while it pays."""
    if not 0 < cache_tokens <= max_tokens:
        raise ValueError(f"need 0 < cache_tokens <= max_tokens, got {cache_tokens} and {max_tokens}")
    over = np.asarray(lengths, np.float64) - (max_tokens - cache_tokens)
    return np.clip(-over / cache_tokens, -1.0, 0.0).astype(np.float32)

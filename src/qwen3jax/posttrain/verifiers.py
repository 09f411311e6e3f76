"""A registered reward (`qwen3jax.rewards.REWARDS`) as the curation `Verifier`: `(completion, gold) -> 1.0 / 0.0`,
or None when the reward cannot judge the completion (it masked it)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from qwen3jax.posttrain.filters import Verifier


def reward_verifier(spec: str | Mapping[str, Any]) -> Verifier:
    """The verifier of reward `spec`: its name (e.g. `"exact_match"`) or `{"name", **options}` as in an experiment's
    `rewards` list. The reward reads the completion's final answer and the `gold` field."""
    from qwen3jax.rewards import build_reward  # pylint: disable=import-outside-toplevel

    name, _, reward = build_reward({"name": spec} if isinstance(spec, str) else dict(spec))

    def verify(completion: str, gold: str) -> float | None:
        result = reward([""], [completion], gold=[gold])
        return float(result.scores[0]) if result.mask[0] else None

    verify.__name__ = f"reward_verifier({name})"
    return verify

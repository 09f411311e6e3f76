"""Rewards and verifiers for post-training: a registry of rewards built by name from the experiment config.

Importing the package registers every reward: `math` (math-verify), `exact_match`, `numeric_match`,
`multiple_choice`, `format`, `ifeval`, `code_tests`, `code_io` (sandboxed), `judge` (a frozen model with a
reference answer) and `reward_model` (a trained reward model, no reference).
"""

from qwen3jax.rewards import code, format, ifeval, judge, match, math, reward_model  # noqa: F401  (registration)
from qwen3jax.rewards.base import REWARDS, Reward, RewardResult, WeightedRewards, build_reward, build_rewards

__all__ = ["REWARDS", "Reward", "RewardResult", "WeightedRewards", "build_reward", "build_rewards"]

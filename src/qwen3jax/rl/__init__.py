"""Reinforcement learning on the shared train step: the `grpo` loss, the `rollouts` batch source and the
`held_out_reward` evaluation; for reward models the `preference_pairs` source and the `pairwise_accuracy`
evaluation (the `pairwise` loss is in `train/losses.py`). Registered on import (the run loop imports this package)."""

from qwen3jax.rl import evals, loss, preference, source  # noqa: F401  (registration)

"""Reinforcement learning on the shared train step: the `grpo` loss, the `rollouts` batch source and the
`held_out_reward` evaluation, registered on import (the run loop imports this package)."""

from qwen3jax.rl import evals, loss, source  # noqa: F401  (registration)

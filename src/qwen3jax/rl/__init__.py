"""Reinforcement learning on the shared train step: the `grpo` loss and the `rollouts` batch source, registered on
import (the run loop imports this package). Its evaluation, `held_out_reward`, lives in `train/evals.py` (SFT
phases use it too)."""

from qwen3jax.rl import loss, source  # noqa: F401  (registration)

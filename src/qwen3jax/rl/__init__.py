"""Reinforcement learning on the shared train step: the `grpo` loss and the `rollouts` batch source; general RL's
`task_mixture` source and `held_out_mixture` evaluation (`rl/mixture.py`); for reward models the `preference_pairs`
source and the `pairwise_accuracy` evaluation (the `pairwise` loss is in `train/losses.py`). Registered on import
(the run loop imports this package). The `held_out_reward` evaluation lives in `train/evals.py` (SFT phases use it
too)."""

from qwen3jax.rl import loss, mixture, preference, source  # noqa: F401  (registration)

"""Strong-to-weak on-policy distillation on the shared train step (SPEC §4.5, GKD): the `distill` loss
(`divergence.py`: forward/reverse KL, JSD(β), full vocabulary in slices or the teacher's top-k), the `distill`
batch source (the student's own samples, or the fixed dataset's rows with probability 1 − lmbda) and the
`kl_heldout` evaluation. Registered on import (the run loop imports this package)."""

from qwen3jax.distill import evals, loss, source  # noqa: F401  (registration)

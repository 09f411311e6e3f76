"""qwen3jax: the Qwen3 training system (dense + MoE models, pretraining, post-training, distillation) in JAX."""

from qwen3jax.platform import skip_absent_tpu

__version__ = "0.1.0"

skip_absent_tpu()  # before any of the package's modules imports JAX

"""qwen3jax: the Qwen3 training system (dense + MoE models, pretraining, post-training, distillation) in JAX."""

__version__ = "0.1.0"

"""Data: embedded corpus, sources, tokenizers, packing, per-stage mixtures, S3 length mix, annotation.

Main entry points (see `pipeline` for the config format and the batch contract):
  build_pretrain_iterator, build_eval_iterator        — batches for the trainer
  s1_config, s2_config, s3_config                     — stage defaults on the embedded corpus
  load_tokenizer, default_tokenizer, Tokenizer        — tokenizers
  reasoning_qa_pairs                                  — synthetic query–answer pairs for post-training
CLIs: `python -m qwen3jax.data.prepare`, `python -m qwen3jax.data.annotate`.
"""

from qwen3jax.data.corpus.build import reasoning_qa_pairs
from qwen3jax.data.pipeline import DataIterator, build_eval_iterator, build_pretrain_iterator
from qwen3jax.data.stages import s1_config, s2_config, s3_config
from qwen3jax.data.tokenizer import SPECIAL_TOKENS, Tokenizer, default_tokenizer, load_tokenizer

__all__ = [
    "DataIterator",
    "SPECIAL_TOKENS",
    "Tokenizer",
    "build_eval_iterator",
    "build_pretrain_iterator",
    "default_tokenizer",
    "load_tokenizer",
    "reasoning_qa_pairs",
    "s1_config",
    "s2_config",
    "s3_config",
]

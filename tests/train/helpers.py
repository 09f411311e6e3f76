"""Tiny experiment configs for training tests."""

import ml_collections

from experiments import pretrain_s1

# Tied embeddings, as the tiny preset had when the learning thresholds of the tests built on these were measured.
TINY_MODEL = dict(vocab_size=512, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
                  head_dim=16, tie_word_embeddings=True)  # fmt: skip
TINY_MOE = dict(TINY_MODEL, num_experts=8, num_experts_per_tok=2, moe_intermediate_size=32)


def tiny_config(moe: bool = False, **overrides) -> ml_collections.ConfigDict:
    c = pretrain_s1.get_config("tiny")
    c.model.update(TINY_MOE if moe else TINY_MODEL)
    c.data.vocab_size = 512
    c.seq_len, c.global_batch, c.steps = 32, 8, 6
    c.log_every, c.eval.every, c.eval.batches, c.samples.num = 1, 0, 1, 0
    c.checkpoint.every, c.checkpoint.async_save = 3, False
    return override(c, **overrides)


def override(c: ml_collections.ConfigDict, **overrides) -> ml_collections.ConfigDict:
    """`c` with dotted keys set, e.g. override(c, **{"optim.peak_lr": 1e-3})."""
    for key, value in overrides.items():
        target = c
        *path, last = key.split(".")
        for part in path:
            target = target[part]
        target[last] = value
    return c

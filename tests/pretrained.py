"""The tiny pretrained model the post-training learning checks start from, trained once per test run.

Pretraining is the S1 mix with half its tokens from the embedded chat set (`reasoning_chat`: the synthetic train
problems as conversations, thinking and non-thinking, no soft-switch flags), so 150 steps teach the chat template
and the problems' language; the SFT phases then teach what they are about (the curated long-CoT form, the flags).
Without the chat share the chat-template tokens are never fed in: after 40 steps of S1 alone (and after 100 steps
with a 30% chat share at 8192 tokens) greedy replies repeated newlines, and no SFT check showed more than a
falling loss.

A 2048-token vocabulary: the embedding rows of an 8192-token one were mostly untrained at this budget (next-token
loss 6.9 after 40 steps), the smaller one costs about the same per step. An untied LM head, as the tiny preset's
(model/config.py says why): with a tied one, these 150 steps gave a model that predicts `<think>` again after
`<think>\\n`, so no SFT phase got a well-formed thinking reply out of it (cold start: well-formed 0/32 after 60
steps; fusion: /think blocks `<think>\\n<think>\\n</think>`); untied, the same budget gives 5/32 and real thinking.
"""

from __future__ import annotations

import os
import pathlib

import jax
import ml_collections

from experiments import pretrain_s1
from qwen3jax.data.cache import build_once
from qwen3jax.train.loop import Trainer

VOCAB = 2048
MODEL = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_layers=2, num_heads=4, num_kv_heads=2,
             head_dim=16, tie_word_embeddings=False)  # fmt: skip
CHAT_SHARE = 0.5  # of the tokens, the rest keeps the S1 shares


def pretrain_config() -> ml_collections.ConfigDict:
    config = pretrain_s1.get_config("tiny")
    config.model.update(MODEL)
    config.data.vocab_size = VOCAB
    for component in config.data.sources.values():
        component.weight *= 1 - CHAT_SHARE
    config.data.sources["chat"] = {"kind": "embedded", "path": "reasoning_chat", "format": "chat", "weight": CHAT_SHARE}
    config.data.packing = "first_fit"  # conversations are kept whole
    config.steps, config.global_batch, config.seq_len, config.log_every = 150, 8, 256, 50
    config.eval.every, config.samples.num, config.checkpoint.async_save = 0, 0, False
    config.optim.peak_lr, config.optim.warmup_steps = 1e-2, 5
    return config


def start_from_it(config: ml_collections.ConfigDict, run: str) -> ml_collections.ConfigDict:
    """`config` (a post-training experiment's tiny variant) with the pretrained model's shape, tokenizer and weights."""
    config.model.update(MODEL)
    config.data.vocab_size, config.init_from = VOCAB, run
    config.samples.num, config.checkpoint.async_save = 0, False
    return config


def run_on_one_device(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> None:
    """For a model this small, 8 simulated devices would only cost compile time on 2 cores."""
    Trainer(config, workdir, jax.devices()[:1]).run()


def shared_pretrained_run(basetemp: pathlib.Path) -> str:
    """The pretraining run directory, trained by whichever test process asks first (under a file lock; the others
    wait for it). pytest-xdist workers share their base directory's parent; a run without workers uses its own."""
    shared = basetemp.parent if os.environ.get("PYTEST_XDIST_WORKER") else basetemp
    return str(build_once(shared / "pretrained_tiny", lambda out: run_on_one_device(pretrain_config(), out)))

"""The SFT step on chat-packed rows of the embedded chat set vs the pretraining step on text-packed rows (S1 mix),
same model (the dense bench config) and shapes, timed in alternation; and the chat set's packing efficiency.

Target (issue 15): the SFT step within 5% of the pretraining step's tokens/s. Both steps run the same model over
the same [batch, seq] capacity; they differ only in the loss mask and segment layout, so the ratio should be ~1.
Times are CPU seconds of this process (user + system, all threads), not wall seconds: on a shared machine the wall
times drift with other jobs' load while the CPU time a step needs stays close to what it needs alone.
"""

from __future__ import annotations

from qwen3jax.data.pipeline import build_pretrain_iterator
from qwen3jax.data.stages import chat_sft_config, s1_config
from qwen3jax.model.bench import BATCH, BENCH_DENSE, ROUNDS, SEQ, alternating, cpu_seconds
from qwen3jax.train.bench import ours_train

PACKING_BATCHES = 64  # batches of the chat set measured for its packing efficiency
TARGET_RATIO = 0.95  # SFT tokens/s / pretraining tokens/s


def packing_efficiency(iterator, first: dict, source: str) -> dict:
    """Trained tokens (loss mask) and filled tokens (segment ids > 0) per capacity token over PACKING_BATCHES
    batches, and the conversations dropped as longer than the sequence."""
    batches = [first] + [next(iterator) for _ in range(PACKING_BATCHES - 1)]
    capacity = sum(b["tokens"].size for b in batches)
    return {
        "trained_fraction": sum(int(b["loss_mask"].sum()) for b in batches) / capacity,
        "filled_fraction": sum(int((b["segment_ids"] > 0).sum()) for b in batches) / capacity,
        "dropped": iterator.report()["dropped_too_long"][source],
    }


def run() -> list[dict]:
    kw = dict(seq_len=SEQ, batch_size=BATCH, seed=0, process_index=0, process_count=1)
    source = "reasoning_chat"
    chat = build_pretrain_iterator(chat_sft_config(source), **kw)
    chat_batch, text_batch = next(chat), next(build_pretrain_iterator(s1_config(), **kw))
    sft, pretrain = ours_train(BENCH_DENSE, chat_batch, "sft"), ours_train(BENCH_DENSE, text_batch)
    sft_s, pretrain_s, ratio = alternating(sft, pretrain, ROUNDS, cpu_seconds)
    row = {"config": "sft", "sft_tok_s": BATCH * SEQ / sft_s, "pretrain_tok_s": BATCH * SEQ / pretrain_s,
           "ratio": ratio}  # fmt: skip
    print(f"SFT step (chat-packed) {row['sft_tok_s']:,.0f} tok/s vs pretraining step (text-packed) "
          f"{row['pretrain_tok_s']:,.0f} tok/s per CPU second: ratio {ratio:.3f} (target >= {TARGET_RATIO})",
          flush=True)  # fmt: skip
    row |= packing_efficiency(chat, chat_batch, source)
    print(f"chat packing at {SEQ}: {row['trained_fraction']:.1%} of the capacity trained, {row['filled_fraction']:.1%} "
          f"filled, {row['dropped']} conversations longer than {SEQ} dropped", flush=True)  # fmt: skip
    return [row]

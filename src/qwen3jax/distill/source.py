"""The `distill` batch source: each global batch is, with probability `lmbda`, the student's own completions of
prompts sampled from the current weights (on-policy, in the run's process and mesh), and otherwise rows of the
fixed dataset of `config.data` (e.g. the teacher's curated responses, off-policy) — TRL GKD's `lmbda`.

On-policy rows are a prompt followed by the student's completion (`rl/rows.py`, the RL rollout's layout), the loss
mask on the completion tokens the student chose; prompts come from a query–verifier set (`prompts`, no rewards) and
alternate between the `modes` ("think": the template's generation prompt; "no_think": with its empty think block).
With `thinking_budget` (-1: none) a sample whose thinking reaches the budget gets SPEC §4's stop-thinking text
forced in, as at inference; the forced tokens are not trained.

State (checkpointed with the train state): the batch counter (which seeds both the on/off choice and the sampler),
the prompt stream's position and the fixed dataset's position, so a resumed run draws exactly the same batches.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import jax
import numpy as np

from qwen3jax.data.verifiable import load_verifiable
from qwen3jax.rl.rows import rollout_rows
from qwen3jax.rl.source import PromptStream
from qwen3jax.sample import generate
from qwen3jax.sample.budget import ThinkingTokens, configured_budget
from qwen3jax.train.batch import TOKEN_FIELDS
from qwen3jax.train.batch_sources import SOURCES, PackedSource
from qwen3jax.train.evals import chat_prompt_ids

if TYPE_CHECKING:
    from qwen3jax.train.loop import Trainer
    from qwen3jax.train.step import TrainState

MODES = {"think": True, "no_think": False}


def on_policy_draw(seed: int, index: int, lmbda: float) -> bool:
    """Whether batch `index` of a run is on-policy: a seeded draw, true with probability `lmbda` (0: never, 1:
    always), the same after a resume."""
    return random.Random(f"{seed}:lmbda:{index}").random() < lmbda


def mode_prompt_ids(tokenizer, records: Sequence[dict[str, Any]], modes: Sequence[str], offset: int = 0):
    """Each record's chat prompt, the i-th in mode `modes[(offset + i) % len(modes)]`."""
    return [chat_prompt_ids(tokenizer, r, MODES[modes[(offset + i) % len(modes)]]) for i, r in enumerate(records)]


def completion_rows(model, tokenizer, prompt_ids, *, seq_len: int, max_new_tokens: int, seed: int = 0,
                    thinking_budget: int | None = None, **decoding):
    """(rows with the packed fields, completion lengths, truncated flags) of the model's completions of
    `prompt_ids`, trained on every completion token the model chose: with a `thinking_budget` (SPEC §4), the
    stop-thinking text forced into a think block that reaches it is in the row (the teacher scores what follows
    it) but not trained."""
    stop_ids = tuple(tokenizer.token_to_id(t) for t in ("<|im_end|>", "<|endoftext|>"))
    budget = {} if thinking_budget is None else {"thinking_budget": thinking_budget,
                                                  "thinking": ThinkingTokens.from_tokenizer(tokenizer)}  # fmt: skip
    result = generate(model, prompt_ids, max_new_tokens=max_new_tokens, stop_ids=stop_ids,
                      vocab_limit=tokenizer.vocab_size, seed=seed, **budget, **decoding)  # fmt: skip
    n, zeros = len(prompt_ids), [np.zeros(len(c)) for c in result.tokens]  # no sampling log-probs
    rows = rollout_rows(prompt_ids, result.tokens, zeros, result.forced, np.zeros(n), np.ones(n, bool),
                        seq_len=seq_len)  # fmt: skip
    lengths = np.array([len(c) for c in result.tokens])
    return {k: rows[k] for k in TOKEN_FIELDS}, lengths, np.array([r == "length" for r in result.finish_reason])


@SOURCES.register("distill")
class DistillSource:
    def __init__(
        self,
        trainer: Trainer,
        *,
        prompts: str,
        lmbda: float = 1.0,
        modes: Sequence[str] = ("think", "no_think"),
        max_new_tokens: int = 128,
        temperature: float = 1.0,
        top_p: float = 1.0,
        top_k: int = 0,
        thinking_budget: int = -1,
    ):
        c = trainer.config
        if not 0.0 <= lmbda <= 1.0:
            raise ValueError(f"batch_source.lmbda (the share of on-policy batches) must be in [0, 1], got {lmbda}")
        modes = list(modes)
        if not modes or any(m not in MODES for m in modes):
            raise ValueError(f"batch_source.modes must be a non-empty list of {sorted(MODES)}, got {modes}")
        if max_new_tokens < 1 or temperature <= 0:
            raise ValueError("batch_source.max_new_tokens must be >= 1 and temperature > 0 (the student samples)")
        self._trainer, self._layout, self.tokenizer = trainer, trainer.layout, trainer.tokenizer
        self.lmbda, self.modes, self.max_new_tokens = lmbda, modes, max_new_tokens
        self._decoding = dict(temperature=temperature, top_p=top_p if top_p < 1 else None, top_k=top_k or None,
                              thinking_budget=configured_budget(thinking_budget))  # fmt: skip
        self._stream = PromptStream(load_verifiable(prompts, "train"), seed=c.seed) if lmbda > 0 else None
        self._fixed = PackedSource(trainer) if lmbda < 1 else None
        self._seed, self._batches = c.seed, 0
        self._metrics: dict[str, float] = {"on_policy": 0.0}
        self._report = {"on_policy_batches": 0, "fixed_batches": 0}

    def next(self, state: TrainState) -> dict[str, jax.Array]:
        on_policy = on_policy_draw(self._seed, self._batches, self.lmbda)
        self._batches += 1
        if not on_policy:
            self._report["fixed_batches"] += 1
            self._metrics["on_policy"] = 0.0
            return self._fixed.next(state)
        c = self._trainer.config
        records = self._stream.take(c.global_batch)
        prompt_ids = mode_prompt_ids(self.tokenizer, records, self.modes, offset=self._batches)
        rows, lengths, truncated = completion_rows(
            state.model(), self.tokenizer, prompt_ids, seq_len=c.seq_len, max_new_tokens=self.max_new_tokens,
            seed=(self._seed * 1_000_003 + self._batches) % 2**31, **self._decoding,
        )  # fmt: skip
        self._report["on_policy_batches"] += 1
        self._metrics = {"on_policy": 1.0, "completion_len_mean": float(lengths.mean()),
                         "truncated_frac": float(truncated.mean())}  # fmt: skip
        share = c.global_batch // jax.process_count()
        start = jax.process_index() * share
        return self._layout.to_global({k: v[start : start + share] for k, v in rows.items()})

    def metrics(self) -> dict[str, float]:
        return dict(self._metrics)

    def get_state(self) -> dict[str, Any]:
        return {"batches": self._batches, "stream": self._stream.get_state() if self._stream else None,
                "fixed": self._fixed.get_state() if self._fixed else None}  # fmt: skip

    def set_state(self, state: dict[str, Any]) -> None:
        self._batches = int(state["batches"])
        if self._stream:
            self._stream.set_state(state["stream"])
        if self._fixed:
            self._fixed.set_state(state["fixed"])

    def report(self) -> dict[str, Any]:
        return {**self._report, **({"fixed": self._fixed.report()} if self._fixed else {})}

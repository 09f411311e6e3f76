"""Batch sources: where the loop's global batches come from. The experiment names one (`batch_source.name`); the
loop only calls `next(state)` once per step, checkpoints `get_state()` with the train state and restores it with
`set_state()`, so an interrupted run resumes on exactly the batch it would have trained on next.

A source gets the `Trainer` it feeds (config, mesh, `layout` of the loss's batch spec, model config, tokenizer,
frozen models) and the remaining keys of the `batch_source` block as keyword arguments.

- `packed`: the data pipeline's packed rows (`data/pipeline.py`): text documents and chat conversations alike,
  mixed by weight; a chat component's rows carry the assistant-only loss mask.
- `rollouts` (RL, to come): prompts from a pipeline, completions sampled from `state`'s current weights on the same
  mesh, rewards and advantages → a batch with the fields of the GRPO loss's spec (`advantages [B]`,
  `old_logprobs [B, T]`, ...); its state is the prompt iterator's position plus its RNG.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Protocol

import jax

from qwen3jax.data.pipeline import build_eval_iterator, build_pretrain_iterator
from qwen3jax.registry import Registry
from qwen3jax.train.step import TrainState

if TYPE_CHECKING:
    from qwen3jax.train.loop import Trainer


class BatchSource(Protocol):
    def next(self, state: TrainState) -> dict[str, jax.Array]:
        """The next global batch: exactly the fields of the loss's batch spec, laid out by `trainer.layout`."""

    def get_state(self) -> dict[str, Any]:
        """This process's exact position, JSON-serialisable (saved in every checkpoint)."""

    def set_state(self, state: dict[str, Any]) -> None: ...

    def report(self) -> dict[str, Any]:
        """What the run's `data_report.json` says about the data (bad records by reason, drops, mixtures)."""

    def metrics(self) -> dict[str, float]:
        """Metrics of the latest batch for the step's log line (e.g. a rollout's rewards); {} for fixed data."""


SOURCES: Registry[Any] = Registry("batch source")


@SOURCES.register("packed")
class PackedSource:
    """Packed rows of the configured data mixture (`config.data`), this process's share of each global batch."""

    def __init__(self, trainer: Trainer):
        c = trainer.config
        self._layout = trainer.layout
        per_process = c.global_batch // jax.process_count()
        self._kw = dict(seq_len=c.seq_len, batch_size=per_process, process_index=jax.process_index(),
                        process_count=jax.process_count())  # fmt: skip
        self._data_cfg = c.data
        self._rows = build_pretrain_iterator(c.data, seed=c.seed, **self._kw)

    def next(self, state: TrainState) -> dict[str, jax.Array]:
        del state  # the data do not depend on the weights
        return self._layout.to_global(next(self._rows))

    def get_state(self) -> dict[str, Any]:
        return self._rows.get_state()

    def set_state(self, state: dict[str, Any]) -> None:
        self._rows.set_state(state)

    def report(self) -> dict[str, Any]:
        return self._rows.report()

    def metrics(self) -> dict[str, float]:
        return {}

    def eval_batches(self) -> Iterator[dict[str, jax.Array]]:
        """One pass over the held-out rows (the last batch padded), as global batches."""
        for rows in build_eval_iterator(self._data_cfg, **self._kw):
            yield self._layout.to_global(rows)

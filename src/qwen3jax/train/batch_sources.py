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
import numpy as np

from qwen3jax.data.pipeline import DataIterator, build_eval_iterator, build_pretrain_iterator
from qwen3jax.parallel import distributed
from qwen3jax.registry import Registry
from qwen3jax.train.step import TrainState

if TYPE_CHECKING:
    from qwen3jax.train.loop import Trainer


class BatchSource(Protocol):
    def next(self, state: TrainState) -> dict[str, jax.Array]:
        """The next global batch: exactly the fields of the loss's batch spec, laid out by `trainer.layout`."""

    def get_state(self) -> dict[str, Any]:
        """This process's exact position, JSON-serialisable (saved in every checkpoint)."""

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore a position of `get_state`; a source that can resume on another number of processes also has
        `merge_states(states) -> state`, the positions of every process of the run that saved them as one."""

    def report(self) -> dict[str, Any]:
        """What the run's `data_report.json` says about the data (bad records by reason, drops, mixtures)."""

    def metrics(self) -> dict[str, float]:
        """Metrics of the latest batch for the step's log line (e.g. a rollout's rewards); {} for fixed data."""


SOURCES: Registry[Any] = Registry("batch source")


@SOURCES.register("packed")
class PackedSource:
    """Packed rows of the configured data mixture (`config.data`), this process's share of each global batch.

    The data are read as `data_shards` disjoint shards (default: one per process of the run's first start), each
    its own pipeline over a contiguous slice of every source, and a global batch is the shards' rows in shard
    order; a process reads the shards of its rows. So the batches depend on the shard count, not on the number of
    processes: the same run on 1 process or on 2 trains on the same batches, and a checkpoint (every shard's
    position) resumes on any number of processes that divides the shard count."""

    def __init__(self, trainer: Trainer, data_shards: int = 0):
        c = trainer.config
        self._layout = trainer.layout
        self._data_cfg, self._seq_len, self._seed, self._global_batch = c.data, c.seq_len, c.seed, c.global_batch
        self._shards = self._build(data_shards or jax.process_count())

    def _build(self, count: int) -> dict[int, DataIterator]:
        """This process's shards of `count`: shard index → its training iterator."""
        processes = jax.process_count()
        if count % processes or self._global_batch % count:
            raise ValueError(f"batch_source.data_shards={count} must be a multiple of the {processes} processes and "
                             f"divide global_batch={self._global_batch}")  # fmt: skip
        self._count, per_process = count, count // processes
        self._mine = range(jax.process_index() * per_process, (jax.process_index() + 1) * per_process)
        return {shard: build_pretrain_iterator(self._data_cfg, seed=self._seed, **self._shard_kw(shard))
                for shard in self._mine}  # fmt: skip

    def _shard_kw(self, shard: int) -> dict[str, int]:
        return dict(seq_len=self._seq_len, batch_size=self._global_batch // self._count, process_index=shard,
                    process_count=self._count)  # fmt: skip

    def next(self, state: TrainState) -> dict[str, jax.Array]:
        del state  # the data do not depend on the weights
        return self._layout.to_global(_concatenate([next(rows) for rows in self._shards.values()]))

    def get_state(self) -> dict[str, Any]:
        return {"data_shards": self._count, "shards": {str(i): rows.get_state() for i, rows in self._shards.items()}}

    def set_state(self, state: dict[str, Any]) -> None:
        if "shards" not in state:  # written before data shards: one per process, of this run's process count
            state = {"data_shards": jax.process_count(), "shards": {str(jax.process_index()): state}}
        if state["data_shards"] != self._count:  # the run started on another number of processes: keep its shards
            self._shards = self._build(state["data_shards"])
        missing = [i for i in self._mine if str(i) not in state["shards"]]
        if missing:
            raise ValueError(f"the checkpoint holds no position of data shards {missing} "
                             f"(it has {sorted(state['shards'], key=int)})")  # fmt: skip
        for i, rows in self._shards.items():
            rows.set_state(state["shards"][str(i)])

    @staticmethod
    def merge_states(states: list[dict[str, Any]]) -> dict[str, Any]:
        """The positions saved by every process of a run (on another number of processes) as one state."""
        counts = {s["data_shards"] for s in states}
        if len(counts) != 1:
            raise ValueError(f"the processes' data positions disagree on the shard count: {sorted(counts)}")
        return {"data_shards": counts.pop(), "shards": {i: s for state in states for i, s in state["shards"].items()}}

    def report(self) -> dict[str, Any]:
        reports = {i: rows.report() for i, rows in self._shards.items()}
        return reports[self._mine[0]] if len(reports) == 1 else {f"shard {i}": r for i, r in reports.items()}

    def metrics(self) -> dict[str, float]:
        return {}

    def eval_batches(self) -> Iterator[dict[str, jax.Array]]:
        """One pass over the held-out rows, as global batches: as many as the longest shard has (every process
        agrees on the count, or the others would wait in the eval step), shorter shards padded with all-zero rows."""
        passes = [build_eval_iterator(self._data_cfg, **self._shard_kw(shard)) for shard in self._mine]
        rows_per_shard = self._global_batch // self._count
        padding = {name: np.zeros((rows_per_shard, *self._layout.shape(name)[1:]), field.dtype)
                   for name, field in self._layout.spec.items()}  # fmt: skip
        while True:
            batches = [next(rows, None) for rows in passes]
            if not distributed.any_process(any(b is not None for b in batches)):
                return
            yield self._layout.to_global(_concatenate([padding if b is None else b for b in batches]))


def _concatenate(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return parts[0] if len(parts) == 1 else {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}

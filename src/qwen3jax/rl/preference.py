"""Reward-model training on preference pairs: the `preference_pairs` batch source (for the `pairwise` loss) and the
`pairwise_accuracy` evaluation.

A pair is a prompt with a chosen and a rejected completion. Each completion is rendered with the prompt as a chat
(user turn, then the completion as the assistant turn, `chat.encode_conversation`) and ends at the assistant's
`<|im_end|>`, where the reward is read. A row of the batch holds one pair packed as two documents, the chosen
sequence as document 1 and the rejected as document 2 (`losses.PAIR_FIELDS`), so micro-batching never separates a
pair. A sequence longer than half the row keeps its last `seq_len // 2` tokens (the end is where a pair differs)
and is counted in the data report.

Pairs come from the embedded preference sets (`embedded`: `data.corpus.verifiable.preference_pairs`, math answers,
buggy code, violated instructions) or a JSONL file of `{"prompt", "chosen", "rejected"}` records (prompt: a string
or a list of chat messages); bad records are counted by reason, never silently dropped.
"""

from __future__ import annotations

import json
import pathlib
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import jax
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from qwen3jax.chat import encode_conversation
from qwen3jax.rl.source import PromptStream
from qwen3jax.train.batch_sources import SOURCES
from qwen3jax.train.evals import EVALS, EvalError
from qwen3jax.train.losses import CHOSEN, REJECTED, sequence_rewards

if TYPE_CHECKING:
    from qwen3jax.chat import TokenizerLike
    from qwen3jax.train.loop import Trainer
    from qwen3jax.train.step import TrainState


def completion_tokens(tokenizer: TokenizerLike, prompt: Any, completion: str) -> list[int]:
    """Ids of `prompt` (a string: one user turn; or chat messages) answered by `completion`, through the chat
    template, ending at the assistant turn's `<|im_end|>` (the token a reward model reads). A completion is judged,
    not imitated: one that thinks where the prompt says /no_think is scored as the template renders it."""
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    tokens, mask = encode_conversation(tokenizer, [*messages, {"role": "assistant", "content": completion}],
                                       strict_modes=False)
    end = max(i for i, m in enumerate(mask) if m) + 1  # past the trained turn's <|im_end|>, before its newline
    return tokens[:end]


def load_pairs(spec: str, split: str) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """(pairs, bad records by reason) of `embedded` (the embedded sets' `split`) or a JSONL file."""
    if spec == "embedded":
        from qwen3jax.data.corpus.verifiable import preference_pairs

        return preference_pairs(split), {}
    path = pathlib.Path(spec).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"preference pairs {spec!r}: no such file (give 'embedded' or a JSONL file)")
    pairs, bad = [], Counter()
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            bad["invalid_json"] += 1
            continue
        if not isinstance(record, dict) or not all(k in record for k in ("prompt", "chosen", "rejected")):
            bad["missing_field"] += 1
        elif not (isinstance(record["chosen"], str) and isinstance(record["rejected"], str)):
            bad["completion_not_text"] += 1
        elif record["chosen"] == record["rejected"]:
            bad["identical_completions"] += 1
        else:
            pairs.append(record)
    return pairs, dict(bad)


class _EncodedPairs:
    """The pairs of one split, each side tokenized once and cut to `max_len` (from the left)."""

    def __init__(self, tokenizer: TokenizerLike, pairs: Sequence[Mapping[str, Any]], max_len: int, head_token: int):
        self.pairs: list[tuple[list[int], list[int]]] = []
        self.domains: list[str] = []
        truncated, head_in_input = 0, 0
        for pair in pairs:
            sides = []
            for side in ("chosen", "rejected"):
                ids = completion_tokens(tokenizer, pair["prompt"], pair[side])
                truncated += len(ids) > max_len
                head_in_input += head_token in ids
                sides.append(ids[-max_len:])
            self.pairs.append((sides[0], sides[1]))
            self.domains.append(str(pair.get("domain", "all")))
        self.report = {"pairs": len(self.pairs), "truncated_sequences": truncated,
                       "sequences_containing_head_token": head_in_input,
                       "domains": dict(Counter(self.domains))}  # fmt: skip

    def rows(self, indices: Sequence[int | None], seq_len: int) -> dict[str, np.ndarray]:
        """One row per index (None: an empty padding row): chosen as document 1, rejected as document 2."""
        tokens = np.zeros((len(indices), seq_len), np.int32)
        segments = np.zeros((len(indices), seq_len), np.int32)
        for row, index in enumerate(indices):
            if index is None:
                continue
            chosen, rejected = self.pairs[index]
            tokens[row, : len(chosen)], segments[row, : len(chosen)] = chosen, CHOSEN
            end = len(chosen) + len(rejected)
            tokens[row, len(chosen) : end], segments[row, len(chosen) : end] = rejected, REJECTED
        return {"tokens": tokens, "segment_ids": segments}


@SOURCES.register("preference_pairs")
class PreferencePairSource:
    """Preference pairs, one per row, in a fresh seeded order every epoch; its state is the stream's (epoch, index).

    Options: `pairs` ("embedded" or a JSONL file, its `split`), `eval_pairs` (default: `pairs`, split "eval")."""

    def __init__(self, trainer: Trainer, *, pairs: str = "embedded", split: str = "train",
                 eval_pairs: str | None = None, eval_split: str = "eval"):  # fmt: skip
        c = trainer.config
        self._layout, self._seq_len, self._global_batch = trainer.layout, c.seq_len, c.global_batch
        if c.global_batch % jax.process_count():
            raise ValueError(f"global_batch {c.global_batch} must divide among {jax.process_count()} processes")
        head_token = getattr(trainer.loss_fn, "head_token", None)
        head_token = trainer.model_cfg.vocab_size - 1 if head_token is None else head_token
        train_records, train_bad = load_pairs(pairs, split)
        if not train_records:
            raise ValueError(f"no preference pairs in {pairs!r} (split {split!r}); bad records: {train_bad}")
        eval_records, eval_bad = load_pairs(eval_pairs or pairs, eval_split)
        self._train, self._eval = (_EncodedPairs(trainer.tokenizer, records, c.seq_len // 2, head_token)
                                   for records in (train_records, eval_records))  # fmt: skip
        self._stream = PromptStream(list(range(len(train_records))), seed=c.seed)
        self._report = {"train": {**self._train.report, "bad_records": train_bad},
                        "eval": {**self._eval.report, "bad_records": eval_bad}}  # fmt: skip

    def _local(self, rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        share = self._global_batch // jax.process_count()
        start = jax.process_index() * share
        return {k: v[start : start + share] for k, v in rows.items()}

    def next(self, state: TrainState) -> dict[str, jax.Array]:
        del state  # the data do not depend on the weights
        rows = self._train.rows(self._stream.take(self._global_batch), self._seq_len)
        return self._layout.to_global(self._local(rows))

    def get_state(self) -> dict[str, Any]:
        return self._stream.get_state()

    def set_state(self, state: dict[str, Any]) -> None:
        self._stream.set_state(state)

    def report(self) -> dict[str, Any]:
        return self._report

    def metrics(self) -> dict[str, float]:
        return {}

    @property
    def eval_domains(self) -> list[str]:
        """The domain of every held-out pair, in the order of `eval_batches`' rows."""
        return list(self._eval.domains)

    def eval_batches(self) -> Iterator[dict[str, jax.Array]]:
        """One pass over the held-out pairs as global batches, the last padded with empty rows (no pair)."""
        n = len(self._eval.pairs)
        for start in range(0, n, self._global_batch):
            indices = [i if i < n else None for i in range(start, start + self._global_batch)]
            yield self._layout.to_global(self._local(self._eval.rows(indices, self._seq_len)))


@EVALS.register("pairwise_accuracy")
class PairwiseAccuracy:
    """Held-out pairwise accuracy of a reward model: the fraction of the source's held-out pairs whose chosen
    completion gets the higher reward (`eval/pairwise_accuracy`, and per domain `eval/pairwise_accuracy/<domain>`),
    the mean margin r_chosen − r_rejected (`eval/margin`) and the pairwise loss (`eval/pairwise`), over the whole
    held-out set (`eval.batches` > 0 caps the batches)."""

    def __init__(self, trainer: Trainer):
        self._trainer = trainer
        self._step = None

    def _compiled(self, state: TrainState):
        if self._step is None:
            graphdef, head_token = state.graphdef, getattr(self._trainer.loss_fn, "head_token", None)

            def margins(params, batch):
                rewards, present = sequence_rewards(nnx.merge(graphdef, params), batch, head_token)
                return rewards[:, 0] - rewards[:, 1], present.all(axis=1)

            replicated = NamedSharding(self._trainer.mesh, PartitionSpec())  # every process reads every row
            self._step = jax.jit(margins, out_shardings=(replicated, replicated))
        return self._step

    def __call__(self, state: TrainState) -> dict[str, float]:
        step, cap = self._compiled(state), self._trainer.config.eval.batches
        source = self._trainer.source
        margins = []
        for i, batch in enumerate(source.eval_batches()):
            if cap and i >= cap:
                break
            margin, is_pair = (np.asarray(a) for a in step(state.params, batch))
            margins.append(margin[is_pair])
        margin = np.concatenate(margins) if margins else np.zeros(0)
        if not margin.size:
            raise EvalError("no held-out preference pairs; check the batch source's eval_pairs")
        out = {"eval/pairwise_accuracy": float(np.mean(margin > 0)), "eval/margin": float(margin.mean()),
               "eval/pairwise": float(np.mean(np.logaddexp(0.0, -margin))), "eval/pairs": float(margin.size)}  # fmt: skip
        domains = np.array(source.eval_domains[: margin.size])
        for domain in sorted(set(domains)):
            out[f"eval/pairwise_accuracy/{domain}"] = float(np.mean(margin[domains == domain] > 0))
        return out

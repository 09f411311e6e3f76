"""Running one task on one model in one mode: generation scored by rewards, or multiple choice by log-likelihood;
a result JSON per run, cached by (checkpoint fingerprint, task fingerprint, settings).

A generation sample is correct when its reward reaches the task's `pass_threshold`. Samples a reward could not judge
(`RewardResult.mask`) are left out and counted by reason; pass@k is over records with at least k judged samples
(the others are counted as `excluded_records`), mean@n is the mean judged score.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pathlib
import time
from collections import Counter
from collections.abc import Mapping
from typing import Any

import numpy as np

from qwen3jax.chat import EMPTY_THINK
from qwen3jax.data.verifiable import batch_fields
from qwen3jax.eval import metrics
from qwen3jax.eval.loglik import score_continuations
from qwen3jax.eval.tasks import KINDS, Task, choice_context
from qwen3jax.rewards import WeightedRewards, build_rewards
from qwen3jax.sample.cli import EVAL_DECODING, ChatModel
from qwen3jax.sample.engine import generate

THINK_OPEN = "<think>\n"
RESULT_VERSION = 1  # bump when the meaning of a cached result changes


@dataclasses.dataclass(frozen=True)
class Settings:
    """What decides a run's result besides the model and the task."""

    mode: str = "think"  # "think" | "no_think" (generation); multiple choice ignores it
    n: int = 1  # samples per prompt
    max_new_tokens: int = 512
    budget: int | None = None  # thinking budget in tokens (SPEC §4 insertion), None: unlimited
    seed: int = 0
    limit: int | None = None  # the first `limit` records only
    decoding: Mapping[str, float] = dataclasses.field(default_factory=dict)  # overrides (command line)
    batch_size: int = 16  # prompts per generation call / rows per log-likelihood pass (no effect on results)

    def resolved_decoding(self, task: Task) -> dict[str, float]:
        """SPEC §4's eval settings for the mode, then the task's, then the command line's."""
        base = dict(EVAL_DECODING[self.mode == "think"], presence_penalty=0.0)
        return {**base, **task.decoding.get(self.mode, {}), **self.decoding}

    def key_fields(self, task: Task) -> dict[str, Any]:
        if task.kind == "multiple_choice":
            return {"limit": self.limit, "normalise": task.normalise}
        fields = dataclasses.asdict(self)
        del fields["batch_size"], fields["decoding"]
        return dict(fields, decoding=self.resolved_decoding(task))


def cache_key(task: Task, settings: Settings, checkpoint: str) -> str:
    content = [RESULT_VERSION, checkpoint, task.fingerprint(), task.kind, settings.key_fields(task)]
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]


def result_name(task: Task, settings: Settings, key: str) -> str:
    if task.kind == "multiple_choice":
        return f"{task.name}-loglik-{key}"
    budget = "" if settings.budget is None else f"-budget{settings.budget}"
    return f"{task.name}-{settings.mode}{budget}-{key}"


# ----------------------------------------------------------------------------------------------- generation
def _messages(record: Mapping[str, Any]) -> list[dict]:
    return record["messages"] if "messages" in record else [{"role": "user", "content": record["prompt"]}]


def generate_completions(chat: ChatModel, task: Task, settings: Settings) -> tuple[list[dict], list[list[str]], dict]:
    """(records that fit, their n completions each as the rewards read them, counts of records left out)."""
    thinking = settings.mode == "think"
    decoding = settings.resolved_decoding(task)
    context = chat.model.config.max_position_embeddings
    # Thinking mode opens the think block in the prompt, so that every model thinks first and the budget applies
    # to all; non-thinking mode's template already holds the empty block. Completions start with that prefix.
    prefix = THINK_OPEN if thinking else EMPTY_THINK
    opened = chat.tokenizer.encode(THINK_OPEN) if thinking else []
    kept, prompts, skipped = [], [], Counter()
    for record in task.records:
        ids = chat.encode_prompt(_messages(record), thinking) + opened
        if len(ids) + settings.max_new_tokens > context:
            skipped["prompt_too_long"] += 1
            continue
        kept.append(record)
        prompts.append(ids)
    completions: list[list[str]] = []
    for start in range(0, len(prompts), settings.batch_size):
        result = generate(
            chat.model, prompts[start : start + settings.batch_size], n=settings.n, stop_ids=chat.stop_ids,
            thinking_budget=settings.budget, thinking=chat.think, vocab_limit=chat.tokenizer.vocab_size,
            max_new_tokens=settings.max_new_tokens, seed=settings.seed + start, **decoding,
        )
        texts = [prefix + chat.tokenizer.decode(ids) for ids in result.tokens]
        completions.extend(texts[i : i + settings.n] for i in range(0, len(texts), settings.n))
    return kept, completions, dict(skipped)


def score_completions(
    records: list[dict], completions: list[list[str]], n: int, built: dict[str, WeightedRewards] | None = None
) -> tuple[np.ndarray, np.ndarray, list[list[str | None]]]:
    """(scores [R, n], judged [R, n], reasons) of every record's samples, by the record's own rewards."""
    built = {} if built is None else built
    scores, judged = np.zeros((len(records), n), np.float32), np.zeros((len(records), n), bool)
    reasons: list[list[str | None]] = [[None] * n for _ in records]
    groups: dict[str, list[int]] = {}
    for i, record in enumerate(records):
        groups.setdefault(json.dumps(record["rewards"], sort_keys=True), []).append(i)
    for spec, rows in groups.items():
        if spec not in built:
            built[spec] = build_rewards(json.loads(spec))
        repeated = [records[i] for i in rows for _ in range(n)]
        prompts, fields = batch_fields(repeated)
        result = built[spec](prompts, [c for i in rows for c in completions[i]], **fields)
        for j, i in enumerate(rows):
            scores[i] = result.scores[j * n : (j + 1) * n]
            judged[i] = result.mask[j * n : (j + 1) * n]
            reasons[i] = list(result.reasons[j * n : (j + 1) * n])
    return scores, judged, reasons


def generation_metrics(scores: np.ndarray, judged: np.ndarray, threshold: float) -> tuple[dict, int]:
    """({"pass@k": summary, ..., "mean@n": summary}, records excluded from some pass@k for lack of judged samples)."""
    n = scores.shape[1]
    counts = judged.sum(axis=1)
    correct = ((scores >= threshold) & judged).sum(axis=1)
    out = {}
    for k in metrics.ks_for(n):
        rows = [i for i in range(len(scores)) if counts[i] >= k]
        out[f"pass@{k}"] = metrics.summarise([metrics.pass_at_k(int(counts[i]), int(correct[i]), k) for i in rows])
    rows = [i for i in range(len(scores)) if counts[i]]
    out[f"mean@{n}"] = metrics.summarise([float(scores[i][judged[i]].mean()) for i in rows])
    return out, int((counts < n).sum())


def run_generation(chat: ChatModel, task: Task, settings: Settings) -> tuple[dict, list[dict]]:
    """(result fields, one sample record per completion)."""
    records, completions, skipped = generate_completions(chat, task, settings)
    scores, judged, reasons = score_completions(records, completions, settings.n)
    found, partial = generation_metrics(scores, judged, task.pass_threshold)
    unjudged = Counter(r for row in reasons for r in row if r is not None)
    answered = [c for row in completions for c in row]
    stats = {
        "think_closed": float(np.mean(["</think>" in c for c in answered])) if answered else None,
        # Both modes' prefixes hold one <think>: a second one is a think block opened again in the reply.
        "think_reopened": float(np.mean([c.count("<think>") > 1 for c in answered])) if answered else None,
        "mean_chars": float(np.mean([len(c) for c in answered])) if answered else None,
    }
    samples = [
        {"id": record.get("id"), "sample": j, "completion": completions[i][j], "score": float(scores[i, j]),
         "judged": bool(judged[i, j]), "reason": reasons[i][j]}
        for i, record in enumerate(records) for j in range(settings.n)
    ]  # fmt: skip
    fields = {
        "primary": "pass@1", "metrics": found, "records": len(records), "skipped_records": skipped,
        "unjudged_samples": dict(unjudged), "records_with_unjudged_samples": partial, "stats": stats,
        "decoding": settings.resolved_decoding(task),
    }
    return fields, samples


# ------------------------------------------------------------------------------------------ multiple choice
def run_choice(chat: ChatModel, task: Task, settings: Settings) -> tuple[dict, list[dict]]:
    """Accuracy of the most likely choice, raw and normalised by the choice's tokens and UTF-8 bytes."""
    encode = chat.tokenizer.encode
    pairs, owners = [], []
    for i, record in enumerate(task.records):
        context = encode(choice_context(task.few_shot, record))
        for choice in record["choices"]:
            pairs.append((context, encode(" " + choice)))
            owners.append(i)
    scored = score_continuations(chat.model, pairs, batch_size=settings.batch_size)
    per_record: dict[str, list[float]] = {"none": [], "tokens": [], "bytes": []}
    samples = []
    at = 0
    for record in task.records:
        these = scored[at : at + len(record["choices"])]
        at += len(record["choices"])
        logprob = np.array([s.logprob for s in these])
        by = {
            "none": logprob,
            "tokens": logprob / np.array([s.tokens for s in these]),
            "bytes": logprob / np.array([len((" " + c).encode()) for c in record["choices"]]),
        }
        for name, values in by.items():
            per_record[name].append(float(int(np.argmax(values)) == record["answer"]))
        samples.append({"id": record.get("id"), "logprobs": logprob.tolist(), "answer": record["answer"],
                        "chosen": int(np.argmax(by[task.normalise]))})  # fmt: skip
    names = {"none": "acc", "tokens": "acc_norm_tokens", "bytes": "acc_norm_bytes"}
    found = {names[k]: metrics.summarise(v) for k, v in per_record.items()}
    fields = {"primary": names[task.normalise], "metrics": found, "records": len(task.records),
              "few_shot": len(task.few_shot)}  # fmt: skip
    return fields, samples


# ------------------------------------------------------------------------------------------------ one run
# A task kind's runner: (model, task, settings) -> (result fields incl. "primary" and "metrics", samples).
RUNNERS = {"generation": run_generation, "multiple_choice": run_choice}
assert set(RUNNERS) == set(KINDS)


def evaluate(
    chat: ChatModel, checkpoint: str, task: Task, settings: Settings, out_dir: pathlib.Path, *, use_cache: bool = True,
    checkpoint_path: str = "",
) -> dict:
    """The result of `task` under `settings`, from `out_dir`'s cache unless `use_cache` is False; each computed
    result is written as `<name>.json` with its samples in `<name>.samples.jsonl`."""
    task = task.limited(settings.limit)
    key = cache_key(task, settings, checkpoint)
    name = result_name(task, settings, key)
    path = out_dir / f"{name}.json"
    if use_cache and path.is_file():
        return dict(json.loads(path.read_text()), cached=True)
    started = time.perf_counter()
    fields, samples = RUNNERS[task.kind](chat, task, settings)
    result = {
        "task": task.name, "kind": task.kind, "mode": None if task.kind == "multiple_choice" else settings.mode,
        "budget": settings.budget, "n": settings.n if task.kind == "generation" else 1,
        "checkpoint": {"path": checkpoint_path, "fingerprint": checkpoint},
        "task_fingerprint": task.fingerprint(), "settings": settings.key_fields(task), "cache_key": key,
        **fields, "bad_task_records": dict(task.data_report), "seconds": round(time.perf_counter() - started, 3),
    }  # fmt: skip
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{name}.samples.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))
    path.write_text(json.dumps(result, indent=2) + "\n")
    return dict(result, cached=False)

"""Evaluation tasks: a list of records plus a small config saying how to score them.

Two kinds:
  `generation`        query–verifier records (`data/verifiable.py`: `prompt` or `messages`, `rewards`, `gold` /
                      `tests` / `constraints` ...), answered through the chat template and scored by the rewards.
  `multiple_choice`   `{"prompt" (or "question"), "choices": [str, ...], "answer": index or letter}`, scored by the
                      log-likelihood of each choice as the continuation of `Question: ...\\nAnswer:` (few-shot
                      examples first), optionally length-normalised.

`--tasks` entries are built-in names (`BUILTIN_TASKS`), a JSONL file (generation records, or multiple-choice ones
when its first record has `choices`), or a JSON task config:
  {"name": "gsm8k", "kind": "generation", "data": "gsm8k.jsonl",   # data relative to the config file
   "layout": "gsm8k",                     # a known layout (LAYOUTS), or declare the mapping yourself:
   "fields": {"prompt": "question", "gold": "answer"}, "gold_format": "gsm8k" | "boxed" | "as_is",
   "prompt_suffix": " Put the final answer in \\\\boxed{}.",
   "rewards": [{"name": "math"}],          # for records without their own `rewards`
   "few_shot": 5, "few_shot_data": "train.jsonl", "normalise": "none" | "tokens" | "bytes",   # multiple choice
   "decoding": {"think": {"temperature": 0.6}, "no_think": {...}},   # overrides of SPEC §4's eval settings
   "pass_threshold": 1.0,                  # a sample is correct when its reward reaches this
   "max_bad_fraction": 0.0}
Bad records are counted by reason (`data/badinput.py`); past `max_bad_fraction` the task stops with the counts.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pathlib
import random
import re
from collections.abc import Mapping
from fractions import Fraction
from typing import Any

from qwen3jax.data.badinput import BadRecord
from qwen3jax.data.corpus.verifiable import verifiable_records
from qwen3jax.data.verifiable import read_verifiable, validate_record
from qwen3jax.rewards.match import answer_span

KINDS = ("generation", "multiple_choice")
NORMALISATIONS = ("none", "tokens", "bytes")
DECODING_KEYS = ("temperature", "top_p", "top_k", "presence_penalty")
MODES = ("think", "no_think")
CONFIG_KEYS = {"name", "kind", "data", "layout", "fields", "gold_format", "prompt_suffix", "rewards", "few_shot",
               "few_shot_data", "normalise", "decoding", "pass_threshold", "max_bad_fraction"}  # fmt: skip
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"

# Known layouts of public sets, as field mappings (`fields`: our field <- theirs).
LAYOUTS = {
    "gsm8k": {"fields": {"prompt": "question", "gold": "answer"}, "gold_format": "gsm8k",
              "prompt_suffix": " Put the final answer in \\boxed{}.", "rewards": [{"name": "math"}]},
    "math": {"fields": {"prompt": "problem", "gold": "solution"}, "gold_format": "boxed",
             "prompt_suffix": " Put the final answer in \\boxed{}.", "rewards": [{"name": "math"}]},
}  # fmt: skip


class TaskError(ValueError):
    """A task that cannot be built (unknown name, bad config); reported as one line."""


@dataclasses.dataclass(frozen=True)
class Task:
    name: str
    kind: str
    records: tuple[dict, ...]
    few_shot: tuple[dict, ...] = ()  # multiple choice: solved examples shown before each question
    normalise: str = "none"
    decoding: Mapping[str, Mapping[str, float]] = dataclasses.field(default_factory=dict)
    pass_threshold: float = 1.0
    data_report: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # bad-record counts of the file

    def fingerprint(self) -> str:
        """A hash of everything that decides the task's result (records, examples, scoring options)."""
        content = {k: v for k, v in dataclasses.asdict(self).items() if k not in ("name", "data_report")}
        return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()

    def limited(self, limit: int | None) -> Task:
        return self if limit is None else dataclasses.replace(self, records=self.records[:limit])


# ------------------------------------------------------------------------------------------- field mappings
def gsm8k_gold(answer: str) -> str:
    """The final answer of a GSM8K solution: the text after its `####` line, thousands separators removed."""
    if "####" not in answer:
        raise BadRecord("unmapped_field", "gsm8k answer has no '#### <answer>' line")
    gold = answer.rsplit("####", 1)[1].strip().replace(",", "")
    if not gold:
        raise BadRecord("unmapped_field", "gsm8k answer has an empty '####' line")
    return gold


def boxed_gold(solution: str) -> str:
    """The last `\\boxed{...}` of a MATH-style solution."""
    if "\\boxed{" not in solution or not answer_span(solution):
        raise BadRecord("unmapped_field", "solution has no \\boxed{} answer")
    return answer_span(solution)


GOLD_FORMATS = {"as_is": lambda gold: gold, "gsm8k": gsm8k_gold, "boxed": boxed_gold}


@dataclasses.dataclass(frozen=True)
class FieldMapping:
    """How a record of another layout becomes ours: renamed fields, the gold extracted, a prompt suffix and default
    rewards added."""

    fields: Mapping[str, str] = dataclasses.field(default_factory=dict)  # our name -> the file's name
    gold_format: str = "as_is"
    prompt_suffix: str = ""
    rewards: tuple[Mapping[str, Any], ...] = ()

    def apply(self, record: Any) -> Any:
        if not isinstance(record, dict):
            return record  # the validator names it
        out = {k: v for k, v in record.items() if k not in self.fields.values()}
        for ours, theirs in self.fields.items():
            if theirs not in record:
                raise BadRecord("unmapped_field", f"the field mapping reads {theirs!r} (as {ours!r}); it is absent")
            out[ours] = record[theirs]
        if "gold" in out and self.gold_format != "as_is":
            if not isinstance(out["gold"], str):
                raise BadRecord("unmapped_field", f"gold to extract ({self.gold_format}) is not a string")
            out["gold"] = GOLD_FORMATS[self.gold_format](out["gold"])
        if self.prompt_suffix and isinstance(out.get("prompt"), str):
            out["prompt"] += self.prompt_suffix
        if self.rewards and "rewards" not in out:
            out["rewards"] = [dict(r) for r in self.rewards]
        return out


# ------------------------------------------------------------------------------------------ multiple choice
def validate_choice_record(record: Any) -> dict[str, Any]:
    """`{"prompt", "choices", "answer": int}` from a multiple-choice record (a `question` is taken as the prompt,
    a letter answer as its index); raises BadRecord naming the first problem."""
    if not isinstance(record, dict):
        raise BadRecord("not_an_object", f"got {type(record).__name__}")
    prompt = record.get("prompt", record.get("question"))
    if not isinstance(prompt, str) or not prompt.strip():
        raise BadRecord("missing_prompt", "needs a non-empty 'prompt' (or 'question') string")
    choices = record.get("choices")
    well_formed = isinstance(choices, list) and all(isinstance(c, str) and c.strip() for c in choices)
    if not well_formed or len(set(choices)) < 2 or len(set(choices)) != len(choices):
        raise BadRecord("bad_choices", "choices must be a list of >= 2 distinct non-empty strings")
    answer = record.get("answer")
    if isinstance(answer, str) and len(answer.strip()) == 1 and answer.strip().upper() in LETTERS:
        answer = LETTERS.index(answer.strip().upper())
    if not isinstance(answer, int) or isinstance(answer, bool) or not 0 <= answer < len(choices):
        raise BadRecord("bad_choices", f"answer must be an index or letter of the {len(choices)} choices")
    return {"id": record.get("id"), "prompt": prompt.strip(), "choices": list(choices), "answer": answer}


def choice_context(few_shot: tuple[dict, ...], record: Mapping[str, Any]) -> str:
    """The text each choice continues: solved examples, then the question."""
    shots = [f"Question: {r['prompt']}\nAnswer: {r['choices'][r['answer']]}" for r in few_shot]
    return "\n\n".join(shots + [f"Question: {record['prompt']}\nAnswer:"])


def _neighbours(gold: str, rng: random.Random, count: int) -> list[str]:
    """`count` distinct wrong numeric answers near `gold` (an integer or fraction)."""
    value = Fraction(gold)
    step = Fraction(1, value.denominator)
    offsets = [k for k in range(-6, 7) if k] + [10, -10]
    candidates = {str(value + k * step) for k in offsets} | {str(value * 2), str(-value)}
    candidates.discard(str(value))
    return rng.sample(sorted(candidates), count)


def math_choice_records(split: str, n: int | None = None, choices: int = 4) -> list[dict[str, Any]]:
    """Multiple-choice records from the embedded math problems: the right answer among `choices - 1` generated
    numeric neighbours, in a seeded random order."""
    out = []
    for record in verifiable_records("math", split, n):
        gold = record["gold"]
        if not re.fullmatch(r"-?\d+(/\d+)?", gold):
            continue
        rng = random.Random(f"math_mc:{record['id']}")
        options = _neighbours(gold, rng, choices - 1) + [gold]
        rng.shuffle(options)
        question = record["prompt"].removesuffix(" Put the final answer in \\boxed{}.")
        out.append({"id": record["id"], "prompt": question, "choices": options, "answer": options.index(gold)})
    return out


# ------------------------------------------------------------------------------------------------- loading
def _builtin(name: str) -> Task:
    if name in ("math", "code", "instruction"):
        return Task(name, "generation", tuple(verifiable_records(name, "eval")))
    if name == "math_mc":
        return Task(name, "multiple_choice", tuple(math_choice_records("eval")),
                    few_shot=tuple(math_choice_records("train", 3)))  # fmt: skip
    raise AssertionError(name)


BUILTIN_TASKS = {
    "math": "embedded held-out math problems (generation, reward math)",
    "code": "embedded held-out function-writing problems (generation, sandboxed assert tests)",
    "instruction": "embedded held-out instruction-following prompts (generation, ifeval rules)",
    "math_mc": "embedded held-out math problems with integer/fraction answers as 4-way multiple choice "
               "(log-likelihood, 3-shot)",
}


def _read(path: pathlib.Path, kind: str, mapping: FieldMapping, max_bad_fraction: float) -> tuple[list, dict]:
    base = validate_choice_record if kind == "multiple_choice" else validate_record
    return read_verifiable(path, max_bad_fraction=max_bad_fraction, validate=lambda r: base(mapping.apply(r)))


def _first_record(path: pathlib.Path) -> Any:
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                try:
                    return json.loads(line)
                except ValueError:
                    return None
    return None


def _from_config(config: Mapping[str, Any], where: pathlib.Path) -> Task:
    unknown = set(config) - CONFIG_KEYS
    if unknown:
        raise TaskError(f"task config {where}: unknown keys {sorted(unknown)}; known: {sorted(CONFIG_KEYS)}")
    layout = config.get("layout")
    if layout is not None and layout not in LAYOUTS:
        raise TaskError(f"task config {where}: unknown layout {layout!r}; known: {sorted(LAYOUTS)}")
    spec = {**LAYOUTS.get(layout, {}), **{k: v for k, v in config.items() if k != "layout"}}
    kind = spec.get("kind", "generation")
    if kind not in KINDS:
        raise TaskError(f"task config {where}: kind must be one of {KINDS}, got {kind!r}")
    if spec.get("gold_format", "as_is") not in GOLD_FORMATS:
        raise TaskError(f"task config {where}: gold_format must be one of {sorted(GOLD_FORMATS)}")
    normalise = spec.get("normalise", "none")
    if normalise not in NORMALISATIONS:
        raise TaskError(f"task config {where}: normalise must be one of {NORMALISATIONS}, got {normalise!r}")
    decoding = spec.get("decoding", {})
    for mode, values in decoding.items():
        if mode not in MODES or not isinstance(values, dict) or set(values) - set(DECODING_KEYS):
            raise TaskError(f"task config {where}: decoding is {{mode in {MODES}: {{{', '.join(DECODING_KEYS)}}}}}")
    if "data" not in spec:
        raise TaskError(f"task config {where}: needs 'data', the JSONL file of its records")
    data = where.parent / spec["data"]
    mapping = FieldMapping(spec.get("fields", {}), spec.get("gold_format", "as_is"), spec.get("prompt_suffix", ""),
                           tuple(spec.get("rewards", ())))  # fmt: skip
    max_bad = float(spec.get("max_bad_fraction", 0.0))
    records, report = _read(data, kind, mapping, max_bad)
    few_shot: list = []
    shots = int(spec.get("few_shot", 0))
    if shots and kind != "multiple_choice":
        raise TaskError(f"task config {where}: few_shot applies to multiple_choice tasks")
    if shots:
        if "few_shot_data" in spec:
            few_shot = _read(where.parent / spec["few_shot_data"], kind, mapping, max_bad)[0][:shots]
        else:  # the first records are the examples, and are not evaluated
            few_shot, records = records[:shots], records[shots:]
        if len(few_shot) < shots:
            raise TaskError(f"task config {where}: few_shot {shots} but only {len(few_shot)} examples")
    if not records:
        raise TaskError(f"task {where}: no records to evaluate")
    return Task(spec.get("name", where.stem), kind, tuple(records), tuple(few_shot), normalise, decoding,
                float(spec.get("pass_threshold", 1.0)), report)  # fmt: skip


def load_task(spec: str) -> Task:
    """A built-in task by name, a JSONL file of records, or a JSON task config."""
    if spec in BUILTIN_TASKS:
        return _builtin(spec)
    path = pathlib.Path(spec)
    if not path.is_file():
        raise TaskError(f"unknown task {spec!r}: not a built-in ({', '.join(BUILTIN_TASKS)}) nor an existing file")
    if path.suffix == ".json":
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as e:
            raise TaskError(f"task config {path}: not valid JSON: {e}") from None
        if not isinstance(config, dict):
            raise TaskError(f"task config {path}: must be a JSON object")
        return _from_config(config, path)
    first = _first_record(path)
    kind = "multiple_choice" if isinstance(first, dict) and "choices" in first else "generation"
    return _from_config({"name": path.stem, "kind": kind, "data": path.name}, path)

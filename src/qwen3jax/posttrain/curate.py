"""Build the long-CoT cold-start set (TR §4.1) from a query pool with gold answers.

    python -m qwen3jax.posttrain.curate --queries embedded --teacher worked_solutions --n 4 --output data/cold_start.jsonl
    python -m qwen3jax.posttrain.curate --queries pool.jsonl --teacher runs/teacher --instruct runs/instruct \\
        --validation heldout.jsonl --n 8 --output data/cold_start.jsonl

1. Query filters: drop queries without a checkable gold answer or with several sub-questions, and (with
   `--instruct`) queries that model answers correctly in non-thinking mode within `--instruct_tries` samples.
2. Sample `--n` thinking responses per query from the teacher; keep queries with pass@n > 0.
3. Response filters (`filters.ResponseFilters`): wrong answer, repetition, guessing, inconsistent thinking,
   language mixing, too close to the validation set. Keep up to `--keep_per_query` passing responses per query,
   and at most `--max_per_domain` queries per domain.

`--modes think,no_think` samples both modes (off-policy distillation: SFT of a student on a teacher's responses);
a non-thinking response must carry the empty think block. The output is chat JSONL (`{"messages",
"enable_thinking", "domain", "provenance"}`, provenance: query id, teacher, mode, sample index, filters passed) and `<output>.report.json` with every filter's count. Query records:
`{"id"?, "prompt" | "messages", "gold" | "answer", "domain"?, "solution"?}` (`solution`: the worked solution the
`worked_solutions` teacher writes out; the embedded pool has one for every problem).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from qwen3jax.data.corpus.synthetic import Problem
from qwen3jax.posttrain import filters, responses

EMBEDDED = "embedded"
WORKED_SOLUTIONS = "worked_solutions"


@dataclasses.dataclass(frozen=True)
class Query:
    id: str
    prompt: str
    gold: str | None
    domain: str | None = None
    solution: str | None = None  # a worked solution, for the worked-solution teacher

    @classmethod
    def from_record(cls, record: dict[str, Any], line: int) -> Query:
        if not isinstance(record, dict):
            raise ValueError(f"query {line}: not a JSON object")
        prompt = record.get("prompt", record.get("query"))
        if prompt is None and isinstance(record.get("messages"), list):
            users = [m.get("content") for m in record["messages"] if isinstance(m, dict) and m.get("role") == "user"]
            prompt = users[-1] if users else None
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError(f"query {line}: no prompt (a `prompt` string or `messages` with a user turn)")
        gold = record.get("gold", record.get("answer"))
        return cls(str(record.get("id", line)), prompt, None if gold is None else str(gold),
                   record.get("domain") or record.get("kind"), record.get("solution"))  # fmt: skip


class Teacher(Protocol):
    name: str

    def sample(self, queries: Sequence[Query], n: int, *, thinking: bool) -> list[list[str]]:
        """`n` responses (assistant text, think block included) per query."""


@dataclasses.dataclass
class WorkedSolutionTeacher:
    """The tiny-scale teacher: each query's worked solution as thinking, a share of samples deliberately flawed
    (`responses.FLAWS`), copying from `validation` problems for the near-validation flaw."""

    validation: list[Any]  # synthetic.Problem-like: query, solution, answer
    seed: int = 0
    flawed_share: float = 0.3
    name: str = WORKED_SOLUTIONS

    def sample(self, queries: Sequence[Query], n: int, *, thinking: bool) -> list[list[str]]:
        out = []
        for q in queries:
            if not q.solution:
                raise ValueError(f"query {q.id} has no `solution`: the {WORKED_SOLUTIONS} teacher writes one out")
            problem = Problem(q.domain or "", q.prompt, q.solution, q.gold or "", {})
            drawn = responses.sample_responses(problem, n, seed=self.seed, flawed_share=self.flawed_share,
                                               validation=self.validation, thinking=thinking)  # fmt: skip
            out.append([text for text, _ in drawn])
        return out


@dataclasses.dataclass
class ModelTeacher:
    """Samples a checkpoint (run dir, native checkpoint or HF folder) through the generation engine with the
    report's decoding settings for the mode (SPEC §4)."""

    chat: Any  # qwen3jax.sample.cli.ChatModel
    name: str
    max_new_tokens: int = 1024
    batch_size: int = 8
    seed: int = 0

    def sample(self, queries: Sequence[Query], n: int, *, thinking: bool) -> list[list[str]]:
        from qwen3jax.sample import generate
        from qwen3jax.sample.cli import EVAL_DECODING

        out = []
        for start in range(0, len(queries), self.batch_size):
            batch = queries[start : start + self.batch_size]
            prompts = [self.chat.encode_prompt([{"role": "user", "content": q.prompt}], thinking) for q in batch]
            result = generate(
                self.chat.model, prompts, n=n, max_new_tokens=self.max_new_tokens, stop_ids=self.chat.stop_ids,
                vocab_limit=self.chat.tokenizer.vocab_size, seed=self.seed + start, **EVAL_DECODING[thinking],
            )  # fmt: skip
            texts = [self.chat.text(ids) for ids in result.tokens]
            # A prompt rendered without thinking already ends in the empty think block: put it back in the text.
            prefix = "" if thinking else "<think>\n\n</think>\n\n"
            out += [[prefix + t for t in texts[i * n : (i + 1) * n]] for i in range(len(batch))]
        return out


MODES = ("think", "no_think")


@dataclasses.dataclass
class CurationSettings:
    n: int = 4  # teacher samples per query and mode
    keep_per_query: int = 1  # passing responses kept per query and mode
    max_per_domain: int | None = None  # queries kept per domain (None: no cap)
    instruct_tries: int = 2  # non-thinking samples of the instruct model per query
    modes: tuple[str, ...] = ("think",)  # cold start: thinking only; off-policy distillation: both

    def __post_init__(self):
        if not self.modes or set(self.modes) - set(MODES):
            raise ValueError(f"modes must be a non-empty subset of {MODES}, got {self.modes}")


def curate(
    queries: Sequence[Query],
    *,
    teacher: Teacher,
    verify: filters.Verifier,
    response_filters: filters.ResponseFilters,
    settings: CurationSettings,
    instruct: Teacher | None = None,
    progress: Callable[[str], None] = lambda message: None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The kept chat records and the report of what every filter removed."""
    report: dict[str, Any] = {"queries": len(queries), "teacher": teacher.name, "settings": dataclasses.asdict(settings)}
    query_reasons: Counter[str] = Counter()
    candidates = []
    for q in queries:
        reason = filters.query_rejection(q.prompt, q.gold, verify)
        if reason:
            query_reasons[reason] += 1
        else:
            candidates.append(q)
    if instruct is not None and candidates:
        progress(f"instruct model: {settings.instruct_tries} non-thinking samples for {len(candidates)} queries")
        answers = instruct.sample(candidates, settings.instruct_tries, thinking=False)
        easy = {q.id for q, a in zip(candidates, answers) if filters.solved_without_thinking(a, q.gold, verify)}
        query_reasons["solved_without_thinking"] += len(easy)
        candidates = [q for q in candidates if q.id not in easy]
    passing: dict[str, list[tuple[str, int, str]]] = {}  # query id -> (mode, sample index, response)
    response_rejected, zero_pass, none_passed = {}, {}, {}
    for mode in settings.modes:
        thinking = mode == "think"
        progress(f"teacher {teacher.name}: {settings.n} {mode} samples for {len(candidates)} queries")
        samples = teacher.sample(candidates, settings.n, thinking=thinking) if candidates else []
        reasons_seen: Counter[str] = Counter()
        zero_pass[mode] = none_passed[mode] = 0
        for q, texts in zip(candidates, samples):
            reasons = [response_filters.rejection(q.prompt, text, q.gold, thinking=thinking) for text in texts]
            reasons_seen.update(r for r in reasons if r)
            if all(r in ("wrong_answer", "unverifiable_answer", "malformed_thinking") for r in reasons):
                zero_pass[mode] += 1  # pass@n = 0: nothing of this query in this mode
                continue
            good = [(mode, i, text) for i, (text, r) in enumerate(zip(texts, reasons)) if r is None]
            none_passed[mode] += not good  # pass@n > 0, but every right answer failed another filter
            passing.setdefault(q.id, []).extend(good[: settings.keep_per_query])
        response_rejected[mode] = {r: reasons_seen[r] for r in filters.RESPONSE_REASONS}
    kept = [{"query": q, "domain": q.domain} for q in candidates if passing.get(q.id)]
    before_balance = len(kept)
    if settings.max_per_domain is not None:
        kept = filters.balance_by_domain(kept, max_per_domain=settings.max_per_domain)
    records = [
        {
            "messages": [{"role": "user", "content": item["query"].prompt}, {"role": "assistant", "content": text}],
            "enable_thinking": mode == "think",
            "domain": item["domain"],
            "provenance": {"query_id": item["query"].id, "teacher": teacher.name, "mode": mode, "sample_index": index,
                           "filters_passed": list(filters.RESPONSE_REASONS)},  # fmt: skip
        }
        for item in kept
        for mode, index, text in passing[item["query"].id]
    ]
    report.update(
        query_rejected={r: query_reasons[r] for r in filters.QUERY_REASONS},
        zero_pass_at_n=zero_pass,
        no_response_passed=none_passed,
        response_rejected=response_rejected,
        domain_capped=before_balance - len(kept),
        kept_queries=len(kept),
        kept_responses=len(records),
        kept_domains=dict(Counter(item["domain"] or "unknown" for item in kept)),
    )
    return records, report


# ---------------------------------------------------------------------------------------------------- command
def read_queries(spec: str, *, split: str = "train") -> list[Query]:
    """Queries from a JSONL file, or the embedded synthetic problems (`embedded`) of a split."""
    if spec == EMBEDDED:
        from qwen3jax.data.corpus.build import reasoning_qa_pairs

        return [Query.from_record(r, i) for i, r in enumerate(reasoning_qa_pairs(split), 1)]
    path = pathlib.Path(spec)
    if not path.is_file():
        raise ValueError(f"query file {path} does not exist")
    queries = []
    for line_number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{line_number}: not JSON ({e.msg})") from None
            queries.append(Query.from_record(record, line_number))
    return queries


def write_jsonl(path: pathlib.Path, records: Sequence[dict[str, Any]]) -> None:
    """Records as JSONL, written to a partial file and renamed when complete (a failed write leaves no output)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    partial.replace(path)


def _load_teacher(spec: str, args: argparse.Namespace, validation: list[Query]) -> Teacher:
    if spec == WORKED_SOLUTIONS:
        problems = [Problem(v.domain or "", v.prompt, v.solution or "", v.gold or "", {}) for v in validation]
        if not problems:
            raise ValueError(f"the {WORKED_SOLUTIONS} teacher copies from validation problems: --validation is empty")
        return WorkedSolutionTeacher(problems, seed=args.seed, flawed_share=args.flawed_share)
    # The evaluation harness's loader tells the three kinds apart (a run directory has a config.json too).
    from qwen3jax.eval.checkpoints import load_checkpoint
    from qwen3jax.sample.cli import UsageError

    try:
        chat, _ = load_checkpoint(spec, args.tokenizer)
    except UsageError as e:  # the command's one error line, not a traceback
        raise ValueError(f"--teacher/--instruct {spec}: {e}") from None
    return ModelTeacher(chat, name=spec, max_new_tokens=args.max_new_tokens, seed=args.seed)


def _verifier() -> filters.Verifier:
    from qwen3jax.rewards.math import verify_answer

    return verify_answer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m qwen3jax.posttrain.curate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--queries", required=True, help=f"query JSONL, or {EMBEDDED!r} (the synthetic problems)")
    parser.add_argument("--teacher", required=True, help=f"run dir, native checkpoint, HF folder, or {WORKED_SOLUTIONS!r}")
    parser.add_argument("--instruct", help="model for the solved-without-thinking query filter (none: filter off)")
    parser.add_argument("--validation", default=EMBEDDED, help=f"validation JSONL, or {EMBEDDED!r} (the eval split)")
    parser.add_argument("--output", required=True, help="chat JSONL to write (with <output>.report.json)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--keep_per_query", type=int, default=1)
    parser.add_argument("--max_per_domain", type=int, default=None)
    parser.add_argument("--instruct_tries", type=int, default=2)
    parser.add_argument("--modes", default="think", help="think, no_think or think,no_think (off-policy distillation)")
    parser.add_argument("--flawed_share", type=float, default=0.3, help=f"{WORKED_SOLUTIONS} teacher only")
    parser.add_argument("--max_new_tokens", type=int, default=1024)
    parser.add_argument("--tokenizer", help="tokenizer.json when the checkpoint folder has none")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    output = pathlib.Path(args.output)
    report_path = output.with_name(output.name + ".report.json")
    try:
        for name in ("n", "keep_per_query", "instruct_tries", "max_new_tokens"):
            if getattr(args, name) < 1:
                raise ValueError(f"--{name} must be >= 1")
        if output.exists() and not args.overwrite:
            raise ValueError(f"{output} exists; pass --overwrite to replace it")
        queries = read_queries(args.queries)
        validation = read_queries(args.validation, split="eval")
        verify = _verifier()
        teacher = _load_teacher(args.teacher, args, validation)
        instruct = _load_teacher(args.instruct, args, validation) if args.instruct else None
        index = filters.NgramIndex(f"{v.prompt}\n{v.solution or ''}" for v in validation)
        settings = CurationSettings(args.n, args.keep_per_query, args.max_per_domain, args.instruct_tries,
                                    tuple(args.modes.split(",")))  # fmt: skip
        records, report = curate(
            queries, teacher=teacher, verify=verify, response_filters=filters.ResponseFilters(verify, index),
            settings=settings, instruct=instruct, progress=lambda m: print(m, flush=True),
        )  # fmt: skip
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    write_jsonl(output, records)
    report_path.write_text(json.dumps(report, indent=2))
    print(json.dumps({k: report[k] for k in ("query_rejected", "zero_pass_at_n", "response_rejected")}))
    print(f"kept {report['kept_responses']} responses for {report['kept_queries']} of {report['queries']} queries "
          f"-> {output} (report: {report_path})")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())

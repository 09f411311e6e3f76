"""Embedded query–verifier sets for RL and reward checks at tiny scale, generated on demand (deterministic).

- `math`: problems of the synthetic generators with large problem spaces, drawn from another seed than
  pretraining and with every query the pretraining corpus holds (train and eval) removed, so RL never trains
  on problems the model saw during pretraining. Reward: `math` against the exact answer.
- `code`: small function-writing tasks from parametrised families, with assert tests (`code_tests`) and the
  same behaviour as stdin/stdout cases (`code_io`); expected values come from a trusted reference implementation.
- `instruction`: writing prompts with 1-3 compatible checkable constraints (`ifeval`).
- `qa`: math questions (other problems than `math`'s) with a reference answer for the `judge`.
- `thinkfollow`: multi-turn conversations switching `/think` and `/no_think`, scored by `format` (ThinkFollow).
- `preference_pairs()`: chosen/rejected completions: whole math derivations vs ones stopped early with a wrong
  intermediate answer, correct vs buggy code, instructions followed vs one violated (each label checked with the
  verifier itself).

Splits are "eval" (the first problems of one seeded, de-duplicated stream per domain) and "train" (the next ones),
so no problem is in both.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
import inspect
import json
import pathlib
import random
import re
import string
from collections.abc import Callable
from typing import Any

from qwen3jax.data.cache import build_once, cache_root
from qwen3jax.data.corpus import synthetic
from qwen3jax.data.corpus.build import DEFAULT_CORPUS, _SYNTHETIC_TRIES
from qwen3jax.rewards.ifeval import check_constraint, instruction_text

SPLITS = {"train": 512, "eval": 128}  # records per domain
SEED = 7_000_003  # the RL sets' seed; pretraining problems use DEFAULT_CORPUS.seed
MATH_KINDS = ("arithmetic", "linear_equation", "linear_system", "gcd_lcm", "modular_power", "sequence",
              "fraction_arithmetic")  # fmt: skip


def _draw_pretraining_queries(out: pathlib.Path) -> None:
    """Every query of the math kinds in the embedded pretraining corpus (both its splits), drawn as its build does."""
    found = {}
    for kind in MATH_KINDS:
        queries: set[str] = set()
        for index in range(DEFAULT_CORPUS.synthetic_per_generator * _SYNTHETIC_TRIES):
            if len(queries) == DEFAULT_CORPUS.synthetic_per_generator:
                break
            queries.add(synthetic.generate(kind, DEFAULT_CORPUS.seed, index).query)
        found[kind] = sorted(queries)
    (out / "queries.json").write_text(json.dumps(found))


@functools.cache
def pretraining_queries(kind: str) -> frozenset[str]:
    """The pretraining corpus's queries of one math kind (drawn once, ~20 s, then cached on disk by a key of the
    generators' code and the corpus config)."""
    blob = inspect.getsource(synthetic) + json.dumps(dataclasses.asdict(DEFAULT_CORPUS)) + repr(MATH_KINDS)
    key = hashlib.sha256(blob.encode()).hexdigest()[:16]
    folder = build_once(cache_root() / "pretraining_queries" / key, _draw_pretraining_queries)
    return frozenset(json.loads((folder / "queries.json").read_text())[kind])


# ---------------------------------------------------------------------------------------------------- math
def _math_record(rng: random.Random, index: int) -> tuple[str, dict[str, Any]] | None:
    kind = MATH_KINDS[index % len(MATH_KINDS)]
    problem = synthetic.generate(kind, SEED, index)
    if problem.query in pretraining_queries(kind):
        return None
    return problem.query, {
        "prompt": problem.query + " Put the final answer in \\boxed{}.", "gold": problem.answer,
        "rewards": [{"name": "math"}], "domain": "math", "kind": kind,
        "difficulty": min(len(problem.solution.splitlines()) / 10, 1.0), "solution": problem.solution,
    }  # fmt: skip


# ---------------------------------------------------------------------------------------------------- code
@dataclasses.dataclass(frozen=True)
class _CodeFamily:
    """A task family: `describe(p)` the task, `solution(p)` a correct body of `def {name}(x):`, `buggy(p)` a
    plausible wrong one, `reference(p, x)` the trusted answer, `inputs(rng)` an argument; params from `params`."""

    name: str
    params: Callable[[random.Random], dict[str, Any]]
    describe: Callable[[dict[str, Any]], str]
    solution: Callable[[dict[str, Any]], str]
    buggy: Callable[[dict[str, Any]], str]
    reference: Callable[[dict[str, Any], Any], Any]
    inputs: Callable[[random.Random], Any]


def _int_list(rng: random.Random) -> list[int]:
    return [rng.randint(-30, 30) for _ in range(rng.randint(0, 8))]


def _word(rng: random.Random) -> str:
    return "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(1, 10)))


_FAMILIES = (
    _CodeFamily(
        "affine_map", lambda r: {"a": r.randint(-5, 5), "b": r.randint(-9, 9)},
        lambda p: f"returns a new list with every element x of the list `xs` replaced by {p['a']}*x + {p['b']}",
        lambda p: f"    return [{p['a']} * x + {p['b']} for x in xs]",
        lambda p: f"    return [{p['a']} * x - {p['b']} for x in xs]",
        lambda p, xs: [p["a"] * x + p["b"] for x in xs], _int_list,
    ),
    _CodeFamily(
        "count_multiples", lambda r: {"k": r.randint(2, 9)},
        lambda p: f"returns how many elements of the list `xs` are divisible by {p['k']}",
        lambda p: f"    return sum(1 for x in xs if x % {p['k']} == 0)",
        lambda p: f"    return sum(1 for x in xs if x % {p['k']} == 0 and x != 0)",
        lambda p, xs: sum(1 for x in xs if x % p["k"] == 0), lambda r: _int_list(r) + [0],
    ),
    _CodeFamily(
        "rotate_left", lambda r: {"k": r.randint(1, 6)},
        lambda p: f"returns the string `xs` rotated left by {p['k']} characters (wrapping around; '' stays '')",
        lambda p: f"    if not xs:\n        return xs\n    k = {p['k']} % len(xs)\n    return xs[k:] + xs[:k]",
        lambda p: f"    return xs[-{p['k']}:] + xs[:-{p['k']}]",
        lambda p, s: s[p["k"] % len(s):] + s[:p["k"] % len(s)] if s else s, _word,
    ),
    _CodeFamily(
        "clip_values", lambda r: (lambda lo: {"lo": lo, "hi": lo + r.randint(1, 20)})(r.randint(-15, 5)),
        lambda p: f"returns the list `xs` with every element clipped to the range [{p['lo']}, {p['hi']}]",
        lambda p: f"    return [min(max(x, {p['lo']}), {p['hi']}) for x in xs]",
        lambda p: f"    return [min(x, {p['hi']}) for x in xs]",
        lambda p, xs: [min(max(x, p["lo"]), p["hi"]) for x in xs],
        lambda r: _int_list(r) + [-40],
    ),
    _CodeFamily(
        "digit_power_sum", lambda r: {"e": r.randint(1, 4)},
        lambda p: f"returns the sum of the decimal digits of the non-negative integer `xs`, each raised to the "
        f"power {p['e']}",
        lambda p: f"    return sum(int(d) ** {p['e']} for d in str(xs))",
        lambda p: f"    return sum(int(d) ** {p['e']} for d in str(xs)[1:])",
        lambda p, n: sum(int(d) ** p["e"] for d in str(n)), lambda r: r.randint(10, 99999),
    ),
    _CodeFamily(
        "caesar_shift", lambda r: {"k": r.randint(1, 25)},
        lambda p: f"returns the lowercase string `xs` with every letter shifted {p['k']} places forward in the "
        "alphabet (z wraps to a)",
        lambda p: f"    return ''.join(chr((ord(c) - 97 + {p['k']}) % 26 + 97) for c in xs)",
        lambda p: f"    return ''.join(chr(ord(c) + {p['k']}) for c in xs)",
        lambda p, s: "".join(chr((ord(c) - 97 + p["k"]) % 26 + 97) for c in s), lambda r: _word(r) + "xyz",
    ),
    _CodeFamily(
        "running_total_mod", lambda r: {"m": r.randint(5, 50)},
        lambda p: f"returns the list of running totals of the list `xs`, each taken modulo {p['m']}",
        lambda p: f"    out, total = [], 0\n    for x in xs:\n        total += x\n        out.append(total % {p['m']})"
        "\n    return out",
        lambda p: f"    out, total = [], 0\n    for x in xs:\n        total = x\n        out.append(total % {p['m']})"
        "\n    return out",
        lambda p, xs: [sum(xs[: i + 1]) % p["m"] for i in range(len(xs))], lambda r: _int_list(r) + [3, 4],
    ),
)


def _code_record(rng: random.Random, index: int) -> tuple[str, dict[str, Any]]:
    family = rng.choice(_FAMILIES)
    params = family.params(rng)
    name = f"{family.name}_{index}"
    args = []
    while len(args) < 5:
        x = family.inputs(rng)
        if x not in args:
            args.append(x)
    solution = f"def {name}(xs):\n{family.solution(params)}\n"
    tests = [f"assert {name}({x!r}) == {family.reference(params, x)!r}" for x in args]
    io_program = f"\n\nimport json\nprint(json.dumps({name}(json.loads(input()))))\n"
    describe = family.describe(params)
    return f"{family.name}:{describe}", {
        "prompt": f"Write a Python function `{name}(xs)` that {family.describe(params)}. Answer with the function in "
        "a ```python code block.",
        "tests": tests, "rewards": [{"name": "code_tests"}], "domain": "code", "kind": family.name,
        "difficulty": 0.2, "solution": solution, "buggy_solution": f"def {name}(xs):\n{family.buggy(params)}\n",
        # The same behaviour as a whole program reading one JSON argument line: code_io cases and the driver to
        # append to a function answer.
        "io_tests": [{"stdin": json.dumps(x) + "\n", "stdout": json.dumps(family.reference(params, x)) + "\n"}
                     for x in args],
        "io_driver": io_program,
    }  # fmt: skip


# ----------------------------------------------------------------------------------------------- instruction
_TOPICS = ("the ocean", "coffee", "bicycles", "libraries", "winter", "volcanoes", "chess", "bees", "trains",
           "gardening", "the moon", "bread", "music lessons", "maps", "rain", "museums")  # fmt: skip
_KEYWORDS = ("lantern", "harbor", "velvet", "compass", "orchard", "thunder", "marble", "quartz", "meadow", "echo")
_PHRASES = ("Here is my answer", "To begin with", "In short", "Dear reader")
_ENDINGS = ("Is there anything else I can help with?", "That is all.", "Thank you for reading.")


def _sentences(topic: str) -> list[str]:
    return [
        f"Many people enjoy {topic} for different reasons.",
        f"The history of {topic} is longer than most of us think.",
        f"Learning about {topic} can change how we see everyday life.",
        f"Some experts spend years studying {topic} in detail.",
        f"Children often ask surprising questions about {topic}.",
    ]


# Constraints the generator samples, with parameters; sets never combine json with anything, case with case, or
# quotation with start/end phrases (they cannot hold together).
_EXCLUSIVE = ({"lowercase", "uppercase"}, {"quotation", "starts_with"}, {"quotation", "ends_with"},
              {"bullet_count", "numbered_sections"}, {"postscript", "ends_with"}, {"postscript", "quotation"},
              {"quotation", "numbered_sections"}, {"quotation", "bullet_count"})  # fmt: skip


def _draw_constraint(rng: random.Random, check: str) -> dict[str, Any]:
    params: dict[str, Any] = {
        "length_words": lambda: {"relation": "at least", "num": rng.choice([30, 40, 50])},
        "keywords_include": lambda: {"keywords": rng.sample(_KEYWORDS, 2)},
        "forbidden_words": lambda: {"words": rng.sample(("very", "really", "thing", "stuff"), 2)},
        "bullet_count": lambda: {"num": rng.randint(2, 4)},
        "numbered_sections": lambda: {"num": rng.randint(2, 3)},
        "starts_with": lambda: {"phrase": rng.choice(_PHRASES)},
        "ends_with": lambda: {"phrase": rng.choice(_ENDINGS)},
        "placeholders": lambda: {"num": rng.randint(1, 3)},
        "highlighted_sections": lambda: {"num": rng.randint(1, 2)},
    }.get(check, dict)()
    return {"id": check, **params}


_GENERATED_CHECKS = ("length_words", "keywords_include", "forbidden_words", "lowercase", "uppercase", "json_format",
                     "bullet_count", "numbered_sections", "starts_with", "ends_with", "quotation", "placeholders",
                     "title", "no_commas", "highlighted_sections", "postscript")  # fmt: skip


def _constraints(rng: random.Random) -> list[dict[str, Any]]:
    if rng.random() < 0.08:
        return [{"id": "json_format"}]
    chosen: list[str] = []
    count = rng.randint(1, 3)
    for check in rng.sample([c for c in _GENERATED_CHECKS if c != "json_format"], 6):
        if len(chosen) == count:
            break
        if not any({check, other} == pair for other in chosen for pair in _EXCLUSIVE):
            chosen.append(check)
    return [_draw_constraint(rng, c) for c in chosen or ["title"]]


def _respond(topic: str, constraints: list[dict[str, Any]], skip: str | None = None) -> str:
    """A response that follows every constraint except `skip` (which it leaves unapplied)."""
    by_id = {c["id"]: c for c in constraints if c["id"] != skip}
    if "json_format" in by_id:
        return json.dumps({"topic": topic, "text": " ".join(_sentences(topic)[:2])})
    lines = _sentences(topic)[:1] if skip == "length_words" else _sentences(topic)
    if "length_words" in by_id:
        while sum(len(s.split()) for s in lines) < by_id["length_words"]["num"] + 5:
            lines += _sentences(topic)
    if "keywords_include" in by_id:
        lines.append(f"Think of a {by_id['keywords_include']['keywords'][0]} and a "
                     f"{by_id['keywords_include']['keywords'][1]}.")  # fmt: skip
    if "placeholders" in by_id:
        lines.append("Write to " + " ".join(f"[field{i}]" for i in range(by_id["placeholders"]["num"])) + ".")
    if "highlighted_sections" in by_id:
        lines = [f"*{s}*" if i < by_id["highlighted_sections"]["num"] else s for i, s in enumerate(lines)]
    if "bullet_count" in by_id:
        num = by_id["bullet_count"]["num"]
        body = "\n".join(f"* {s}" for s in lines[:num]) + "\n\n" + " ".join(lines[num:])
    elif "numbered_sections" in by_id:
        num = by_id["numbered_sections"]["num"]
        chunks = [lines[i::num] for i in range(num)]
        body = "\n\n".join(f"Section {i + 1}\n" + " ".join(chunk) for i, chunk in enumerate(chunks))
    else:
        body = " ".join(lines)
    if "title" in by_id:
        body = f"<<All about {topic}>>\n\n{body}"
    if "starts_with" in by_id:
        body = f"{by_id['starts_with']['phrase']}.\n\n{body}"
    if "postscript" in by_id:
        body += f"\n\nP.S. I hope you like {topic}."
    if "ends_with" in by_id:
        body += f"\n\n{by_id['ends_with']['phrase']}"
    if "quotation" in by_id:
        body = f'"{body}"'
    if "lowercase" in by_id:
        body = body.lower()
    if "uppercase" in by_id:
        body = body.upper()
    if "no_commas" in by_id:
        body = body.replace(",", "")
    elif skip == "no_commas":
        body += " Also, that matters."
    if skip == "forbidden_words":
        body += f" It is {constraints[[c['id'] for c in constraints].index(skip)]['words'][0]} good."
    return body


def _instruction_record(rng: random.Random, index: int) -> tuple[str, dict[str, Any]]:
    topic = rng.choice(_TOPICS)
    constraints = _constraints(rng)
    task = rng.choice(("Write a short note about", "Describe", "Tell a friend about", "Explain"))
    prompt = f"{task} {topic}. " + " ".join(instruction_text(c) for c in constraints)
    return prompt, {
        "prompt": prompt, "constraints": constraints, "rewards": [{"name": "ifeval"}], "domain": "instruction",
        "difficulty": len(constraints) / 3, "topic": topic,
    }  # fmt: skip


# ------------------------------------------------------------------------------------ general RL (judge, format)
_QA_OFFSET = 1_000_000  # problem indices of their own, so QA questions are not the math set's


def _qa_record(rng: random.Random, index: int) -> tuple[str, dict[str, Any]] | None:
    """A math question with a reference answer for the judge (no answer format asked for), not one of the math
    set's (small problem spaces repeat across indices)."""
    drawn = _math_record(rng, _QA_OFFSET + index)
    if drawn is None or drawn[1]["prompt"] in _math_prompts():
        return None
    query, math = drawn
    return query, {
        "prompt": query, "reference": math["gold"], "rewards": [{"name": "judge"}], "domain": "qa", "kind": math["kind"],
    }  # fmt: skip


@functools.cache
def _math_prompts() -> frozenset[str]:
    return frozenset(r["prompt"] for split in _splits("math").values() for r in split)


_SWITCHES = ("/think", "/no_think")


def _thinkfollow_record(rng: random.Random, index: int) -> tuple[str, dict[str, Any]]:
    """A ThinkFollow-style conversation (TR §4.3): 2-3 user turns, each ending with a random `/think` or
    `/no_think`, the mode switching at least once; the reply to the last turn must follow its switch (`format`)."""
    del index
    turns = rng.randint(2, 3)
    switches = [rng.choice(_SWITCHES) for _ in range(turns)]
    if len(set(switches)) == 1:
        switches[-1] = _SWITCHES[1 - _SWITCHES.index(switches[-1])]
    messages = []
    for turn, switch in enumerate(switches):
        topic = rng.choice(_TOPICS)
        task = rng.choice(("Write a short note about", "Describe", "Tell a friend about", "Explain"))
        messages.append({"role": "user", "content": f"{task} {topic}. {switch}"})
        if turn < turns - 1:
            messages.append({"role": "assistant", "content": rng.choice(_sentences(topic))})
    return json.dumps(messages), {"messages": messages, "rewards": [{"name": "format"}], "domain": "thinkfollow"}


_DRAWS = {"math": _math_record, "code": _code_record, "instruction": _instruction_record, "qa": _qa_record,
          "thinkfollow": _thinkfollow_record}  # fmt: skip


@functools.cache
def _splits(domain: str) -> dict[str, list[dict[str, Any]]]:
    """One seeded stream per domain, de-duplicated by problem: the first records are the eval split, the next
    the train split, so no problem is in both."""
    rng, seen, records, index = random.Random(f"{domain}:{SEED}"), set(), [], 0
    while len(records) < SPLITS["eval"] + SPLITS["train"]:
        drawn = _DRAWS[domain](rng, index)
        index += 1
        if drawn is not None and drawn[0] not in seen:
            seen.add(drawn[0])
            records.append(drawn[1])
    out = {"eval": records[: SPLITS["eval"]], "train": records[SPLITS["eval"] :]}
    for split, chunk in out.items():
        for i, record in enumerate(chunk):
            record["id"] = f"{domain}/{split}/{i}"
    return out


def verifiable_records(domain: str, split: str, n: int | None = None) -> list[dict[str, Any]]:
    """The embedded query–verifier records of one domain (`_DRAWS`: "math", "code", "instruction", "qa",
    "thinkfollow") and split."""
    if domain not in _DRAWS:
        raise ValueError(f"unknown domain {domain!r}; expected one of {sorted(_DRAWS)}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {sorted(SPLITS)}")
    records = _splits(domain)[split]
    if n is not None and not 0 < n <= len(records):
        raise ValueError(f"n must be in [1, {len(records)}] for the {split} split, got {n}")
    return copy.deepcopy(records[:n])


# ------------------------------------------------------------------------------------------ preference pairs
_NUMBER = re.compile(r"-?\d+(?:/\d+)?")


def _stopped_early(solution: str, gold: str, rng: random.Random) -> tuple[str, str] | None:
    """(the first lines of `solution`, the value they last arrived at) for a derivation abandoned part-way with an
    intermediate value as its answer, the cut drawn among those whose value is not `gold`; None if there is none.

    The value is the first number after the last `=`/`≡` of the kept lines (else their last number): "… = 441 ≡ 18
    (mod 47)" gives 18. Unlike a changed digit of the final answer, which a reward model can only catch by redoing
    the arithmetic, the missing closing steps (the check, the last reduction, "which is the value of …") can be seen
    by a small model, so the pair is learnable at tiny scale and its label is still right (the answer is wrong)."""
    lines, options = solution.splitlines(), []
    for cut in range(1, len(lines)):
        kept = "\n".join(lines[:cut])
        after_last_equals = re.split("[=≡]", kept)[-1]
        numbers = _NUMBER.findall(after_last_equals) if after_last_equals != kept else []
        value = numbers[0] if numbers else next(reversed(_NUMBER.findall(kept)), None)
        if value is not None and value != gold:
            options.append((kept, value))
    return rng.choice(options) if options else None


def _wrong_answer(answer: str, rng: random.Random) -> str:
    """A corrupted final answer: one digit changed (never the same text)."""
    digits = [i for i, c in enumerate(answer) if c.isdigit()]
    if not digits:
        return answer + "1"
    i = rng.choice(digits)
    return answer[:i] + rng.choice([d for d in "0123456789" if d != answer[i]]) + answer[i + 1 :]


def _fmt_answer(body: str) -> str:
    return f"<think>\n\n</think>\n\n{body}"


def preference_pairs(split: str, n_per_domain: int | None = None) -> list[dict[str, Any]]:
    """`{"prompt", "chosen", "rejected", "domain", "id"}` pairs whose labels the verifiers confirm: the math pair is
    the whole derivation and its answer vs the derivation stopped early with an intermediate value as the answer (the
    whole derivation with one digit of the answer changed where no intermediate value differs from the answer), the
    code pair is the reference vs a buggy solution, the instruction pair follows every constraint vs all but one."""
    rng = random.Random(f"preference:{SEED}:{split}")
    pairs = []
    for record in verifiable_records("math", split, n_per_domain):
        steps, gold = record["solution"], record["gold"]
        wrong_steps, wrong = _stopped_early(steps, gold, rng) or (steps, _wrong_answer(gold, rng))
        pairs.append({
            "id": "pair/" + record["id"], "prompt": record["prompt"], "domain": "math", "gold": gold,
            "chosen": _fmt_answer(f"{steps}\n\nThe final answer is $\\boxed{{{gold}}}$."),
            "rejected": _fmt_answer(f"{wrong_steps}\n\nThe final answer is $\\boxed{{{wrong}}}$."),
        })  # fmt: skip
    for record in verifiable_records("code", split, n_per_domain):
        pairs.append({
            "id": "pair/" + record["id"], "prompt": record["prompt"], "domain": "code", "tests": record["tests"],
            "chosen": _fmt_answer(f"```python\n{record['solution']}```"),
            "rejected": _fmt_answer(f"```python\n{record['buggy_solution']}```"),
        })  # fmt: skip
    for record in verifiable_records("instruction", split, n_per_domain):
        constraints = record["constraints"]
        chosen = _respond(record["topic"], constraints)
        violated = rng.choice(constraints)["id"]
        rejected = _respond(record["topic"], constraints, skip=violated)
        if not all(check_constraint(chosen, c) for c in constraints) or all(
            check_constraint(rejected, c) for c in constraints
        ):
            raise AssertionError(f"generated instruction pair does not separate: {record['prompt']!r}")
        pairs.append({
            "id": "pair/" + record["id"], "prompt": record["prompt"], "domain": "instruction",
            "constraints": constraints, "chosen": _fmt_answer(chosen), "rejected": _fmt_answer(rejected),
        })  # fmt: skip
    return pairs

"""Embedded corpus: verifiable synthetic problems, cleaning, deterministic cached build, labels and splits."""

from __future__ import annotations

import ast
import itertools
import math
import operator
import re
from collections import Counter
from fractions import Fraction

import pytest

from qwen3jax.data.cache import CACHE_ENV
from qwen3jax.data.corpus import build, realtext, synthetic
from qwen3jax.data.corpus.clean import clean_text, html_to_text, split_paragraphs

_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


def _evaluate(expression: str) -> Fraction:
    """Exact value of an arithmetic expression written with × and ÷ (independent of the generator's code)."""

    def ev(node):
        if isinstance(node, ast.BinOp):
            return _OPS[type(node.op)](ev(node.left), ev(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -ev(node.operand)
        assert isinstance(node, ast.Constant)
        return Fraction(node.value)

    return ev(ast.parse(expression.replace("×", "*").replace("÷", "/"), mode="eval").body)


def _fraction(text: str) -> Fraction:
    return Fraction(text)


def _linear_side(side: str, variables: str) -> tuple[dict[str, int], int]:
    """Coefficients and constant of a linear expression such as `-x + 3y - 7`."""
    coefs, constant = dict.fromkeys(variables, 0), 0
    for sign, number, var in re.findall(r"([+-]?)\s*(\d*)([a-z]?)", side.replace(" ", "")):
        if not number and not var:
            continue
        value = int(number) if number else 1
        value = -value if sign == "-" else value
        if var:
            coefs[var] += value
        else:
            constant += value
    return coefs, constant


def _verify(problem: synthetic.Problem) -> None:
    """Recomputes the answer from the problem text (or, where the text is prose, from its parameters)."""
    q, p, answer = problem.query, problem.params, problem.answer
    if problem.kind == "arithmetic":
        expression = re.fullmatch(r"Evaluate (.*)\.", q).group(1)
        assert _evaluate(expression) == _fraction(answer)
    elif problem.kind == "linear_equation":
        left, right = re.fullmatch(r"Solve for x: (.*) = (.*)\.", q).groups()
        (a, b), (c, d) = ((s[0]["x"], s[1]) for s in (_linear_side(left, "x"), _linear_side(right, "x")))
        x = int(answer)
        assert a * x + b == c * x + d and a != c
    elif problem.kind == "linear_system":
        eqs = re.findall(r"([^.]*?) = (-?\d+)", q.split("equations ")[1])
        x, y = map(int, answer.strip("()").split(", "))
        for lhs, rhs in eqs:
            coefs, _ = _linear_side(lhs.replace("and ", ""), "xy")
            assert coefs["x"] * x + coefs["y"] * y == int(rhs)
    elif problem.kind == "quadratic":
        roots = [int(r) for r in answer.split(", ")]
        a, b, c = p["a"], p["b"], p["c"]
        assert all(a * r * r + b * r + c == 0 for r in roots) and roots == sorted(set(roots))
        assert len(roots) == (1 if b * b == 4 * a * c else 2)
    elif problem.kind == "gcd":
        assert int(answer) == math.gcd(p["a"], p["b"]) and f"{p['a']} and {p['b']}" in q
    elif problem.kind == "lcm":
        assert int(answer) == math.lcm(p["a"], p["b"]) and f"{p['a']} and {p['b']}" in q
    elif problem.kind == "modular_power":
        a, e, m = map(int, re.fullmatch(r"Compute (\d+)\^(\d+) mod (\d+)\.", q).groups())
        assert int(answer) == pow(a, e, m)
    elif problem.kind == "prime_factorization":
        n = int(re.search(r"Write (\d+)", q).group(1))
        factors = [f.split("^") for f in answer.split(" × ")]
        assert math.prod(int(b) ** (int(k[0]) if k else 1) for b, *k in factors) == n
        assert all(all(int(b) % d for d in range(2, int(b))) for b, *_ in factors)
    elif problem.kind == "counting":
        if p["type"] == "combination":
            k, n = map(int, re.search(r"committee of (\d+) people be chosen from (\d+)", q).groups())
            assert int(answer) == math.comb(n, k)
        else:
            word = re.search(r"word ([A-Z]+)", q).group(1)
            assert int(answer) == len(set(itertools.permutations(word))) if len(word) <= 8 else True
            assert int(answer) == math.factorial(len(word)) // math.prod(
                math.factorial(c) for c in Counter(word).values()
            )
    elif problem.kind == "probability":
        dice = 2 if q.startswith("Two") else 3
        sums = [sum(r) for r in itertools.product(range(1, 7), repeat=dice)]
        if m := re.search(r"exactly (\d+)", q):
            hits = sum(s == int(m.group(1)) for s in sums)
        else:
            hits = sum(s >= int(re.search(r"at least (\d+)", q).group(1)) for s in sums)
        assert _fraction(answer) == Fraction(hits, len(sums))
    elif problem.kind == "ordering":
        facts = re.findall(r"(\w+) is (taller|shorter) than (\w+)", q)
        people = {x for a, _, b in facts for x in (a, b)}
        taller = {(a, b) if rel == "taller" else (b, a) for a, rel, b in facts}
        orders = [o for o in itertools.permutations(sorted(people)) if all(o.index(a) < o.index(b) for a, b in taller)]
        assert len(orders) == 1
        position = len(people) - 1 if "shortest" in q else p["position"]
        assert answer == orders[0][position]
    elif problem.kind == "knights_knaves":
        statements = re.findall(r'([ABC]) says: "([^"]*)\."', q)
        consistent = []
        for world in itertools.product((True, False), repeat=3):
            kind = dict(zip("ABC", world))
            ok = True
            for speaker, claim in statements:
                if m := re.fullmatch(r"([ABC]) is a (knight|knave)", claim):
                    truth = kind[m.group(1)] == (m.group(2) == "knight")
                elif m := re.fullmatch(r"([ABC]) and I are the same kind", claim):
                    truth = kind[m.group(1)] == kind[speaker]
                else:
                    assert claim == "At least one of us is a knave"
                    truth = not all(world)
                ok &= kind[speaker] == truth
            if ok:
                consistent.append(", ".join(f"{n}: {'knight' if kind[n] else 'knave'}" for n in "ABC"))
        assert consistent == [answer]
    elif problem.kind == "sequence":
        terms = [int(t) for t in re.search(r"begins (.*), …", q).group(1).split(", ")]
        n = int(re.search(r"term number (\d+)", q).group(1))
        d, r = terms[1] - terms[0], Fraction(terms[1], terms[0])
        if all(b - a == d for a, b in zip(terms, terms[1:])):
            assert int(answer) == terms[0] + d * (n - 1)
        else:
            assert int(answer) == terms[0] * r ** (n - 1)
    elif problem.kind == "fraction_arithmetic":
        expression = re.fullmatch(r"Compute (.*)\. Give.*", q).group(1)
        assert _evaluate(expression) == _fraction(answer)
    elif problem.kind == "word_problem":
        if m := re.search(r"constant (\d+) km/h for (\d+) hours and (\d+) minutes", q):
            speed, hours, minutes = map(int, m.groups())
            assert _fraction(answer) == speed * (hours + Fraction(minutes, 60))
        else:
            a, b = map(int, re.search(r"in (\d+) hours and another fills it in (\d+) hours", q).groups())
            assert _fraction(answer) == 1 / (Fraction(1, a) + Fraction(1, b))
    else:
        raise AssertionError(f"no verifier for {problem.kind}")


@pytest.mark.parametrize("generator", sorted(synthetic.GENERATORS))
def test_synthetic_answers_are_correct(generator):
    for index in range(60):
        problem = synthetic.generate(generator, seed=3, index=index)
        _verify(problem)
        doc = problem.document()
        assert doc.startswith(f"Problem: {problem.query}") and doc.endswith(f"\\boxed{{{problem.answer}}}$.")
        assert problem.solution.strip()


def test_synthetic_generation_is_deterministic():
    assert synthetic.generate("knights_knaves", 0, 5) == synthetic.generate("knights_knaves", 0, 5)
    assert len({synthetic.generate("arithmetic", seed, 0).query for seed in range(20)}) > 15
    with pytest.raises(KeyError, match="unknown problem generator"):
        synthetic.generate("nope", 0, 0)


def test_clean_and_split():
    assert clean_text("a \r\nb\x00c\u200b\n\n\n\n\nd  \n") == "a\nbc\n\nd"
    assert clean_text("e\u0301") == "\u00e9"  # NFC
    assert clean_text("bad \udc80 surrogate") == "bad ? surrogate"
    text = "\n\n".join(f"paragraph {i} " + "x" * 30 for i in range(10))
    parts = split_paragraphs(text, 100)
    assert all(len(p) <= 100 for p in parts) and "\n\n".join(parts) == text
    assert split_paragraphs("y" * 250, 100) == ["y" * 100, "y" * 100, "y" * 50]
    html = (
        "<html><head><title>t</title><style>p{}</style></head><body><h1>Title</h1>"
        "<p>Some  <b>bold</b>\ntext.</p><pre>  code\n    indented</pre></body></html>"
    )
    text = clean_text(html_to_text(html))
    assert text == "Title\n\nSome bold text.\n\n  code\n    indented"


def test_real_text_collectors_read_the_installation():
    docs = list(realtext.python_docs(max_chars=60_000))
    assert len(docs) > 50
    assert {"for", "if", "while"} <= {d.title for d in docs}
    assert all(200 <= len(d.text) <= 60_000 for d in docs)
    code = list(itertools.islice(realtext.python_code(max_chars=60_000), 30))
    assert all(d.source == "python_code" and ".py" in d.title and len(d.text) <= 60_000 for d in code)


SMALL = build.CorpusConfig(sources=("python_docs", "synthetic_reasoning"), synthetic_per_generator=6, eval_permille=200)


def test_small_corpus_build_is_deterministic_cached_and_labelled(tmp_path, monkeypatch):
    contents = []
    for name in ("a", "b"):
        monkeypatch.setenv(CACHE_ENV, str(tmp_path / name))
        directory = build.corpus_dir(SMALL)
        contents.append({p.name: p.read_bytes() for p in sorted(directory.iterdir())})
    assert contents[0] == contents[1]
    monkeypatch.setattr(build, "_build", lambda *a: pytest.fail("a cached corpus was rebuilt"))
    assert build.corpus_dir(SMALL) == directory

    manifest = build.manifest(SMALL)
    for source in SMALL.sources:
        train = list(build.iter_records(source, "train", SMALL))
        held_out = list(build.iter_records(source, "eval", SMALL))
        assert manifest["sources"][source]["train"] == len(train) and len(held_out) > 0
        assert not {r["id"] for r in train} & {r["id"] for r in held_out}
        texts = [r["text"] for r in train + held_out]
        assert len(set(texts)) == len(texts)  # no text twice, so none in both splits
        for record in train + held_out:
            assert record["source"] == source and record["text"].strip()
            assert {"language", "domain", "edu_score", "safety", "group"} <= set(record)
    assert len(list(build.iter_records("synthetic_reasoning", "train", SMALL))) + len(
        list(build.iter_records("synthetic_reasoning", "eval", SMALL))
    ) == 6 * len(synthetic.GENERATORS)
    with pytest.raises(ValueError, match="not in this corpus"):
        build.source_path("python_code", "train", SMALL)


def test_reasoning_qa_pairs(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    train, held_out = build.reasoning_qa_pairs("train", SMALL), build.reasoning_qa_pairs("eval", SMALL)
    assert train and held_out and not {q["id"] for q in train} & {q["id"] for q in held_out}
    assert not {q["query"] for q in train} & {q["query"] for q in held_out}
    for pair in train:
        problem = synthetic.Problem(pair["kind"], pair["query"], pair["solution"], pair["answer"], pair["params"])
        _verify(problem)


def test_corpus_config_validation():
    with pytest.raises(ValueError, match="unknown embedded sources"):
        build.CorpusConfig(sources=("nope",))
    with pytest.raises(ValueError, match="eval_permille"):
        build.CorpusConfig(eval_permille=0)

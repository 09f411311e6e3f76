"""Procedurally generated, verifiable STEM and reasoning problems with worked step-by-step solutions.

Each generator draws one problem from a `random.Random`, computes its answer exactly (integers and `Fraction`s, never
floats) and writes the solution as the steps a careful student would show. `Problem.params` keeps the structured
data the problem was built from, so verifiers (tests, RL rewards) can recompute the answer independently. The same
problems serve pretraining (as documents, up-weighted in S2) and post-training (as query–answer pairs).

`generate(kind, seed, index)` is a pure function of its arguments: the random stream is seeded from the string
`"{kind}:{seed}:{index}"` (Python hashes string seeds with SHA-512, stable across runs and platforms).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import random
from collections import Counter
from collections.abc import Callable
from fractions import Fraction
from typing import Any


@dataclasses.dataclass(frozen=True)
class Problem:
    kind: str
    query: str
    solution: str  # Worked steps, without the final-answer line.
    answer: str  # Canonical final answer (what a verifier compares against).
    params: dict[str, Any]  # JSON-compatible data the problem was generated from.

    def document(self) -> str:
        """The pretraining text: problem, worked solution, and the answer in a `\\boxed{}` as in Qwen's math data."""
        return f"Problem: {self.query}\n\nSolution:\n{self.solution}\n\nThe final answer is $\\boxed{{{self.answer}}}$."


def _fmt(value: Fraction | int) -> str:
    value = Fraction(value)
    return str(value.numerator) if value.denominator == 1 else f"{value.numerator}/{value.denominator}"


def _paren(value: Fraction | int) -> str:
    """A number as an operand: negatives in parentheses so that `3 × (-2)` reads unambiguously."""
    return f"({_fmt(value)})" if value < 0 else _fmt(value)


# ------------------------------------------------------------------------------------------------- arithmetic
_PRECEDENCE = {"+": 1, "-": 1, "×": 2, "÷": 2}
_APPLY: dict[str, Callable[[Fraction, Fraction], Fraction]] = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "×": lambda a, b: a * b,
    "÷": lambda a, b: a / b,
}


@dataclasses.dataclass
class _Node:
    value: Fraction
    op: str | None = None
    left: _Node | None = None
    right: _Node | None = None

    def render(self) -> str:
        if self.op is None:
            return _paren(self.value)
        assert self.left is not None and self.right is not None
        left, right = self.left.render(), self.right.render()
        if self.left.op and _PRECEDENCE[self.left.op] < _PRECEDENCE[self.op]:
            left = f"({left})"
        # Right operands of equal precedence need parentheses too: a - (b - c), a ÷ (b × c).
        if self.right.op and _PRECEDENCE[self.right.op] <= _PRECEDENCE[self.op]:
            right = f"({right})"
        return f"{left} {self.op} {right}"


def _random_tree(rng: random.Random, ops: int) -> _Node:
    if ops == 0:
        return _Node(Fraction(rng.randint(1, 20)))
    op = rng.choice("+-×÷")
    left_ops = rng.randint(0, ops - 1)
    if op == "÷":  # Exact division: the dividend is a literal multiple of the divisor's (non-zero) value.
        right = _random_tree(rng, ops - 1)
        if right.value == 0 or abs(right.value) > 12 or right.value.denominator != 1:
            right = _Node(Fraction(rng.randint(2, 9)))
        left = _Node(right.value * rng.randint(1, 12))
    else:
        left, right = _random_tree(rng, left_ops), _random_tree(rng, ops - 1 - left_ops)
    return _Node(_APPLY[op](left.value, right.value), op, left, right)


def _next_reducible(node: _Node) -> _Node | None:
    """The operation evaluated next by the usual order: highest precedence first, then leftmost."""
    candidates: list[tuple[int, int, _Node]] = []

    def visit(n: _Node) -> None:
        if n.op is None:
            return
        assert n.left is not None and n.right is not None
        visit(n.left)
        if n.left.op is None and n.right.op is None:
            candidates.append((-_PRECEDENCE[n.op], len(candidates), n))
        visit(n.right)

    visit(node)
    return min(candidates, key=lambda c: c[:2])[2] if candidates else None


def arithmetic(rng: random.Random) -> Problem:
    tree = _random_tree(rng, rng.randint(2, 5))
    expression = tree.render()
    steps = []
    while (node := _next_reducible(tree)) is not None:
        assert node.left is not None and node.right is not None and node.op is not None
        step = f"{_paren(node.left.value)} {node.op} {_paren(node.right.value)} = {_fmt(node.value)}"
        node.op, node.left, node.right = None, None, None
        rest = f"so the expression becomes {tree.render()}" if tree.op else "which is the value of the expression"
        steps.append(f"Step {len(steps) + 1}: {step}, {rest}.")
    return Problem(
        "arithmetic",
        f"Evaluate {expression}.",
        "Work inside parentheses first, then multiplication and division from left to right, then addition and "
        "subtraction from left to right.\n" + "\n".join(steps),
        _fmt(tree.value),
        {"expression": expression},
    )


# ---------------------------------------------------------------------------------------------------- algebra
def _term(coef: int, var: str, first: bool) -> str:
    """`coef·var` as it is written inside a sum: `3x`, `- x`, `+ 12`."""
    magnitude = abs(coef)
    body = (var if magnitude == 1 else f"{magnitude}{var}") if var else str(magnitude)
    if first:
        return f"-{body}" if coef < 0 else body
    return f"- {body}" if coef < 0 else f"+ {body}"


def _linear(coefs: list[tuple[int, str]]) -> str:
    terms = [(c, v) for c, v in coefs if c != 0] or [(0, "")]
    return " ".join(_term(c, v, i == 0) if c else "0" for i, (c, v) in enumerate(terms))


def linear_equation(rng: random.Random) -> Problem:
    x = rng.randint(-12, 12)
    a = rng.choice([i for i in range(-9, 10) if i != 0])
    c = rng.choice([i for i in range(-9, 10) if i not in (0, a)])
    b = rng.randint(-20, 20)
    d = (a - c) * x + b
    equation = f"{_linear([(a, 'x'), (b, '')])} = {_linear([(c, 'x'), (d, '')])}"
    k = a - c
    steps = [
        f"Move the x terms to the left by subtracting {_paren(c)}x from both sides: "
        f"{_linear([(k, 'x'), (b, '')])} = {d}.",
        f"Move the constant to the right by subtracting {_paren(b)} from both sides: {_linear([(k, 'x')])} = {d - b}.",
        f"Divide both sides by {_paren(k)}: x = {d - b} ÷ {_paren(k)} = {x}.",
        f"Check: the left side is {a}·{_paren(x)} + {_paren(b)} = {a * x + b} and the right side is "
        f"{c}·{_paren(x)} + {_paren(d)} = {c * x + d}.",
    ]
    return Problem(
        "linear_equation", f"Solve for x: {equation}.", "\n".join(steps), str(x), {"a": a, "b": b, "c": c, "d": d}
    )


def linear_system(rng: random.Random) -> Problem:
    x, y = rng.randint(-9, 9), rng.randint(-9, 9)
    while True:
        a1, b1, a2, b2 = (rng.choice([i for i in range(-6, 7) if i != 0]) for _ in range(4))
        if a1 * b2 - a2 * b1 != 0:
            break
    c1, c2 = a1 * x + b1 * y, a2 * x + b2 * y
    eq1, eq2 = f"{_linear([(a1, 'x'), (b1, 'y')])} = {c1}", f"{_linear([(a2, 'x'), (b2, 'y')])} = {c2}"
    k = b1 * a2 - b2 * a1
    steps = [
        f"Multiply the first equation by {_paren(a2)} and the second by {_paren(a1)} so that x has the same "
        f"coefficient in both: {_linear([(a1 * a2, 'x'), (b1 * a2, 'y')])} = {c1 * a2} and "
        f"{_linear([(a2 * a1, 'x'), (b2 * a1, 'y')])} = {c2 * a1}.",
        f"Subtract the second from the first to eliminate x: {_linear([(k, 'y')])} = {c1 * a2 - c2 * a1}.",
        f"So y = {c1 * a2 - c2 * a1} ÷ {_paren(k)} = {y}.",
        f"Substitute y = {y} into the first equation: {_linear([(a1, 'x')])} + {_paren(b1)}·{_paren(y)} = {c1}, so "
        f"{_linear([(a1, 'x')])} = {c1 - b1 * y} and x = {x}.",
        f"Check with the second equation: {a2}·{_paren(x)} + {_paren(b2)}·{_paren(y)} = {c2}.",
    ]
    return Problem(
        "linear_system",
        f"Solve the system of equations {eq1} and {eq2}. Give the answer as (x, y).",
        "\n".join(steps),
        f"({x}, {y})",
        {"eq1": [a1, b1, c1], "eq2": [a2, b2, c2]},
    )


def _factored(r1: int, r2: int) -> str:
    """(x - r1)(x - r2) written as usual: `x(x - 3)`, `(x + 2)(x - 5)`, `x²`."""
    factors = sorted(("x" if r == 0 else f"(x {_term(-r, '', False)})" for r in (r1, r2)), key=lambda f: f != "x")
    return "x²" if factors == ["x", "x"] else "".join(factors)


def quadratic(rng: random.Random) -> Problem:
    r1, r2 = sorted((rng.randint(-9, 9), rng.randint(-9, 9)))
    k = rng.randint(1, 3)
    b, c = -(r1 + r2), r1 * r2
    equation = f"{_linear([(k, 'x²'), (k * b, 'x'), (k * c, '')])} = 0"
    steps = []
    if k != 1:
        steps.append(f"Divide both sides by {k}: {_linear([(1, 'x²'), (b, 'x'), (c, '')])} = 0.")
    steps += [
        f"Look for two numbers whose product is {c} and whose sum is {-b}: they are {r1} and {r2}, since "
        f"{_paren(r1)} × {_paren(r2)} = {c} and {_paren(r1)} + {_paren(r2)} = {-b}.",
        f"So the equation factors as {_factored(r1, r2)} = 0.",
        "A product is zero exactly when one of its factors is zero, so x = "
        + (f"{r1} (a double root)." if r1 == r2 else f"{r1} or x = {r2}."),
    ]
    answer = str(r1) if r1 == r2 else f"{r1}, {r2}"
    return Problem(
        "quadratic",
        f"Find all real solutions of {equation}. List them in increasing order.",
        "\n".join(steps),
        answer,
        {"a": k, "b": k * b, "c": k * c},
    )


# ------------------------------------------------------------------------------------------- number theory
def gcd_lcm(rng: random.Random) -> Problem:
    g = rng.randint(2, 30)
    a, b = sorted((g * rng.randint(2, 40), g * rng.randint(2, 40)), reverse=True)
    if a == b:
        a += g
    steps, x, y = [], a, b
    while y:
        q, r = divmod(x, y)
        steps.append(f"{x} = {q} × {y} + {r}")
        x, y = y, r
    gcd = math.gcd(a, b)
    lines = ["Use the Euclidean algorithm, dividing the larger number by the smaller and keeping the remainder:"]
    lines += steps + [f"The last non-zero remainder is {gcd}, so gcd({a}, {b}) = {gcd}."]
    if rng.random() < 0.5:
        return Problem(
            "gcd", f"Find the greatest common divisor of {a} and {b}.", "\n".join(lines), str(gcd), {"a": a, "b": b}
        )
    lcm = a * b // gcd
    lines.append(f"Then lcm({a}, {b}) = {a} × {b} ÷ gcd = {a * b} ÷ {gcd} = {lcm}.")
    return Problem(
        "lcm", f"Find the least common multiple of {a} and {b}.", "\n".join(lines), str(lcm), {"a": a, "b": b}
    )


def modular_power(rng: random.Random) -> Problem:
    a, e, m = rng.randint(2, 30), rng.randint(5, 60), rng.randint(3, 50)
    bits = [i for i in range(e.bit_length()) if e >> i & 1]
    lines = [f"Write the exponent in binary: {e} = " + " + ".join(str(1 << i) for i in reversed(bits)) + "."]
    power = a % m
    lines.append(f"{a}^1 ≡ {power} (mod {m})")
    powers = {0: power}
    for i in range(1, e.bit_length()):
        nxt = power * power % m
        lines.append(f"{a}^{1 << i} ≡ {power}² = {power * power} ≡ {nxt} (mod {m})")
        power = powers[i] = nxt
    result = 1
    for i in bits:
        result = result * powers[i] % m
    factors = " × ".join(str(powers[i]) for i in reversed(bits))
    lines.append(f"Multiply the powers that appear in the binary expansion: {factors} ≡ {result} (mod {m}).")
    return Problem(
        "modular_power", f"Compute {a}^{e} mod {m}.", "\n".join(lines), str(result), {"a": a, "e": e, "m": m}
    )


def prime_factorization(rng: random.Random) -> Problem:
    n = 1
    while n < 30:
        n = math.prod(rng.choice([2, 2, 2, 3, 3, 5, 7, 11, 13]) for _ in range(rng.randint(2, 6)))
    lines, rest, factors, p = [], n, Counter(), 2
    while rest > 1:
        if rest % p == 0:
            lines.append(f"{rest} ÷ {p} = {rest // p}")
            rest //= p
            factors[p] += 1
        else:
            p += 1
    answer = " × ".join(f"{p}^{k}" if k > 1 else str(p) for p, k in sorted(factors.items()))
    return Problem(
        "prime_factorization",
        f"Write {n} as a product of prime powers.",
        "Divide by the smallest prime that divides what is left, until 1 remains:\n"
        + "\n".join(lines)
        + f"\nCollecting the prime factors: {n} = {answer}.",
        answer,
        {"n": n},
    )


# ------------------------------------------------------------------------------------------------ counting
_REPEATED_LETTER_WORDS = (
    "BANANA",
    "LETTER",
    "BALLOON",
    "COMMITTEE",
    "PEPPER",
    "STATISTICS",
    "ASSESS",
    "TATTOO",
    "BOOKKEEPER",
    "REFERENCE",
    "ADDRESS",
    "SUCCESS",
    "CHEESE",
    "COFFEE",
    "LEVEL",
    "RADAR",
    "PUZZLE",
    "MAMMAL",
    "PARALLEL",
    "NINETEEN",
    "INNING",
    "DEEDED",
    "ALGEBRA",
    "GEOMETRY",
    "CALCULUS",
)


def counting(rng: random.Random) -> Problem:
    if rng.random() < 0.5:
        n, k = rng.randint(5, 15), rng.randint(2, 5)
        numerator = " × ".join(str(n - i) for i in range(k))
        ways = math.comb(n, k)
        steps = (
            f"The order of the chosen people does not matter, so count combinations: C({n}, {k}) = "
            f"{n}! / ({k}! × {n - k}!).\nCancel {n - k}!: C({n}, {k}) = ({numerator}) / {k}! = "
            f"{math.perm(n, k)} / {math.factorial(k)} = {ways}."
        )
        return Problem(
            "counting",
            f"In how many ways can a committee of {k} people be chosen from {n} people?",
            steps,
            str(ways),
            {"n": n, "k": k, "type": "combination"},
        )
    word = rng.choice(_REPEATED_LETTER_WORDS)
    counts = sorted(Counter(word).items())
    repeated = [(ch, c) for ch, c in counts if c > 1]
    ways = math.factorial(len(word)) // math.prod(math.factorial(c) for _, c in counts)
    denominator = " × ".join(f"{c}!" for _, c in repeated) or "1"
    steps = (
        f"The word {word} has {len(word)} letters. Letter counts: "
        + ", ".join(f"{ch}: {c}" for ch, c in counts)
        + f".\nArrangements of {len(word)} letters where repeated letters are interchangeable: "
        f"{len(word)}! / ({denominator}) = {math.factorial(len(word))} / "
        f"{math.prod(math.factorial(c) for _, c in repeated)} = {ways}."
    )
    return Problem(
        "counting",
        f"How many distinct arrangements of the letters of the word {word} are there?",
        steps,
        str(ways),
        {"word": word, "type": "anagram"},
    )


def dice_probability(rng: random.Random) -> Problem:
    dice = rng.choice([2, 2, 3])
    outcomes = Counter(sum(roll) for roll in itertools.product(range(1, 7), repeat=dice))
    total = 6**dice
    if rng.random() < 0.5:
        target = rng.randint(dice + 1, 6 * dice - 1)
        favourable, event = outcomes[target], f"the sum is exactly {target}"
        detail = f"{favourable} of the {total} equally likely outcomes have sum {target}"
        params = {"dice": dice, "sum_equals": target}
    else:
        target = rng.randint(dice + 2, 6 * dice - 1)
        favourable = sum(v for s, v in outcomes.items() if s >= target)
        event = f"the sum is at least {target}"
        detail = (
            "Count outcomes per sum: "
            + ", ".join(f"{s}: {outcomes[s]}" for s in range(target, 6 * dice + 1))
            + f"; together {favourable} of the {total} equally likely outcomes"
        )
        params = {"dice": dice, "sum_at_least": target}
    probability = Fraction(favourable, total)
    steps = (
        f"Rolling {dice} fair six-sided dice gives 6^{dice} = {total} equally likely outcomes.\n{detail}.\n"
        f"The probability is {favourable}/{total} = {_fmt(probability)}."
    )
    return Problem(
        "probability",
        f"{'Two' if dice == 2 else 'Three'} fair six-sided dice are rolled. What is the probability that {event}? "
        "Give the answer as a reduced fraction.",
        steps,
        _fmt(probability),
        params,
    )


# --------------------------------------------------------------------------------------------------- logic
_NAMES = (
    "Alice",
    "Bob",
    "Carol",
    "David",
    "Erin",
    "Frank",
    "Grace",
    "Heidi",
    "Ivan",
    "Judy",
    "Mallory",
    "Oscar",
    "Peggy",
    "Rupert",
    "Sybil",
    "Trent",
    "Victor",
    "Walter",
)
_ORDINALS = ("tallest", "second tallest", "third tallest", "fourth tallest", "fifth tallest", "sixth tallest")


def ordering(rng: random.Random) -> Problem:
    people = rng.sample(_NAMES, rng.randint(4, 6))  # Hidden order, tallest first.
    facts = []
    for taller, shorter in zip(people, people[1:]):
        facts.append(
            f"{taller} is taller than {shorter}" if rng.random() < 0.5 else f"{shorter} is shorter than {taller}"
        )
    rng.shuffle(facts)
    position = rng.randrange(len(people))
    question = "the shortest" if position == len(people) - 1 else f"the {_ORDINALS[position]}"
    steps = ["Each statement compares two people directly. Rewrite every statement as 'X is taller than Y':"]
    steps += [f"- {a} is taller than {b}." for a, b in zip(people, people[1:])]
    steps.append(
        f"Nobody is said to be taller than {people[0]}, so {people[0]} is the tallest. Following the chain "
        "from the tallest down gives the full order: " + " > ".join(people) + "."
    )
    steps.append(f"Counting from the top, {question} is {people[position]}.")
    return Problem(
        "ordering",
        f"{'. '.join(facts)}. Who is {question}?",
        "\n".join(steps),
        people[position],
        {"order": people, "position": position},
    )


def _kk_statement(rng: random.Random, speaker: int, n: int) -> tuple[str, Callable[[tuple[bool, ...]], bool]]:
    other = rng.choice([i for i in range(n) if i != speaker])
    name = "ABC"[other]
    match rng.randrange(4):
        case 0:
            return f"{name} is a knight", lambda w: w[other]
        case 1:
            return f"{name} is a knave", lambda w: not w[other]
        case 2:
            return f"{name} and I are the same kind", lambda w: w[other] == w[speaker]
        case _:
            return "at least one of us is a knave", lambda w: not all(w)


def knights_knaves(rng: random.Random) -> Problem:
    """Three islanders; knights always tell the truth, knaves always lie. Statements are drawn until exactly one
    assignment is consistent, and the solution rules out every other case explicitly."""
    worlds = list(itertools.product((True, False), repeat=3))
    while True:
        statements = [_kk_statement(rng, i, 3) for i in range(3)]
        consistent = [w for w in worlds if all(w[i] == claim(w) for i, (_, claim) in enumerate(statements))]
        if len(consistent) == 1:
            break
    solution = consistent[0]

    def kind(is_knight: bool) -> str:
        return "knight" if is_knight else "knave"

    lines = ["A knight's statement is true and a knave's statement is false. Check all 8 cases:"]
    for world in worlds:
        label = ", ".join(f"{'ABC'[i]} {kind(world[i])}" for i in range(3))
        broken = [i for i, (_, claim) in enumerate(statements) if world[i] != claim(world)]
        if broken:
            i = broken[0]
            truth = "true" if statements[i][1](world) else "false"
            lines.append(
                f"- {label}: {'ABC'[i]}'s statement is {truth}, but a {kind(world[i])} "
                f"{'cannot say something false' if world[i] else 'cannot say something true'}. Impossible."
            )
        else:
            lines.append(f"- {label}: every statement fits the speaker's kind. Consistent.")
    said = " ".join(f'{"ABC"[i]} says: "{text[0].upper() + text[1:]}."' for i, (text, _) in enumerate(statements))
    answer = ", ".join(f"{'ABC'[i]}: {kind(solution[i])}" for i in range(3))
    lines.append(f"Exactly one case is consistent, so {answer}.")
    return Problem(
        "knights_knaves",
        f"On an island, knights always tell the truth and knaves always lie. Three islanders A, B and C "
        f"speak. {said} Determine who is a knight and who is a knave.",
        "\n".join(lines),
        answer,
        {"statements": [t for t, _ in statements]},
    )


# --------------------------------------------------------------------------------------- sequences, fractions
def sequence(rng: random.Random) -> Problem:
    n = rng.randint(7, 12)
    if rng.random() < 0.5:
        a, d = rng.randint(-20, 20), rng.choice([i for i in range(-9, 10) if i != 0])
        terms = [a + d * i for i in range(5)]
        answer = a + d * (n - 1)
        steps = (
            f"Consecutive differences are all {d}, so this is an arithmetic sequence with first term {a} and "
            f"common difference {d}.\nThe n-th term is {a} + (n - 1) × {_paren(d)}, so term {n} is "
            f"{a} + {n - 1} × {_paren(d)} = {answer}."
        )
    else:
        a, r = rng.randint(1, 5), rng.choice([-3, -2, 2, 3])
        terms = [a * r**i for i in range(5)]
        answer = a * r ** (n - 1)
        steps = (
            f"Each term is {_paren(r)} times the previous one, so this is a geometric sequence with first term "
            f"{a} and ratio {r}.\nThe n-th term is {a} × {_paren(r)}^(n - 1), so term {n} is "
            f"{a} × {_paren(r)}^{n - 1} = {a} × {_paren(r ** (n - 1))} = {answer}."
        )
    return Problem(
        "sequence",
        f"The sequence begins {', '.join(map(str, terms))}, … What is term number {n}?",
        steps,
        str(answer),
        {"terms": terms, "n": n},
    )


def fraction_sum(rng: random.Random) -> Problem:
    b, d = rng.randint(2, 12), rng.randint(2, 12)
    a, c = rng.randint(1, 2 * b), rng.randint(1, 2 * d)
    op = rng.choice("+-")
    lcd = math.lcm(b, d)
    a2, c2 = a * (lcd // b), c * (lcd // d)
    raw = a2 + c2 if op == "+" else a2 - c2
    result = Fraction(raw, lcd)
    steps = [
        f"The least common denominator of {b} and {d} is {lcd}.",
        f"Rewrite both fractions over {lcd}: {a}/{b} = {a2}/{lcd} and {c}/{d} = {c2}/{lcd}.",
        f"{'Add' if op == '+' else 'Subtract'} the numerators: {a2} {op} {c2} = {raw}, giving {raw}/{lcd}.",
    ]
    if result.denominator != lcd:
        g = math.gcd(raw, lcd)
        steps.append(f"Divide numerator and denominator by their greatest common divisor {g}: {_fmt(result)}.")
    return Problem(
        "fraction_arithmetic",
        f"Compute {a}/{b} {op} {c}/{d}. Give the result in lowest terms.",
        "\n".join(steps),
        _fmt(result),
        {"a": a, "b": b, "c": c, "d": d, "op": op},
    )


def word_problem(rng: random.Random) -> Problem:
    if rng.random() < 0.5:
        speed, hours, minutes = rng.randint(4, 24) * 5, rng.randint(2, 5), rng.choice([0, 15, 30, 45])
        time = Fraction(hours) + Fraction(minutes, 60)
        distance = speed * time
        steps = (
            f"{hours} hours and {minutes} minutes is {hours} + {minutes}/60 = {_fmt(time)} hours.\n"
            f"Distance = speed × time = {speed} × {_fmt(time)} = {_fmt(distance)} km."
        )
        return Problem(
            "word_problem",
            f"A train travels at a constant {speed} km/h for {hours} hours and "
            f"{minutes} minutes. How many kilometres does it cover?",
            steps,
            _fmt(distance),
            {"speed": speed, "hours": hours, "minutes": minutes},
        )
    p, q = rng.randint(2, 12), rng.randint(2, 12)
    together = 1 / (Fraction(1, p) + Fraction(1, q))
    steps = (
        f"The first pipe fills 1/{p} of the tank per hour and the second 1/{q}.\n"
        f"Together they fill 1/{p} + 1/{q} = {_fmt(Fraction(1, p) + Fraction(1, q))} of the tank per hour.\n"
        f"The time to fill one tank is the reciprocal: {_fmt(together)} hours."
    )
    return Problem(
        "word_problem",
        f"One pipe fills a tank in {p} hours and another fills it in {q} hours. How many "
        "hours do they take to fill it together? Give an exact answer.",
        steps,
        _fmt(together),
        {"p": p, "q": q},
    )


GENERATORS: dict[str, Callable[[random.Random], Problem]] = {
    "arithmetic": arithmetic,
    "linear_equation": linear_equation,
    "linear_system": linear_system,
    "quadratic": quadratic,
    "gcd_lcm": gcd_lcm,
    "modular_power": modular_power,
    "prime_factorization": prime_factorization,
    "counting": counting,
    "probability": dice_probability,
    "ordering": ordering,
    "knights_knaves": knights_knaves,
    "sequence": sequence,
    "fraction_arithmetic": fraction_sum,
    "word_problem": word_problem,
}


def generate(generator: str, seed: int, index: int) -> Problem:
    """Problem number `index` of `generator` for `seed` (pure function of the three)."""
    if generator not in GENERATORS:
        raise KeyError(f"unknown problem generator {generator!r}; known: {sorted(GENERATORS)}")
    return GENERATORS[generator](random.Random(f"{generator}:{seed}:{index}"))

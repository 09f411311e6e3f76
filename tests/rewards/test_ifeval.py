"""Instruction-following checks: each one on a response that follows it and one that does not, the reward's
partial/strict scores, malformed constraints masked, and every constraint stated as a prompt sentence."""

import pytest

from qwen3jax.rewards import REWARDS
from qwen3jax.rewards.ifeval import CHECKS, check_constraint, count_sentences, count_words, instruction_text, \
    validate_constraint  # fmt: skip

# id -> (constraint, a response that follows it, one that does not)
CASES = {
    "length_words": ({"relation": "at least", "num": 5}, "one two three four five", "one two three four"),
    "length_sentences": ({"relation": "exactly", "num": 2}, "It rains. We stay in!", "It rains. We stay. Bye."),
    "length_paragraphs": ({"num": 2}, "First part.\n\nSecond part.", "Only one part.\nStill the same one."),
    "keywords_include": ({"keywords": ["moon", "tide"]}, "The moon pulls the tide.", "The moon is bright."),
    "keyword_frequency": ({"keyword": "cat", "relation": "at least", "num": 2}, "cat and cat", "a cat; category"),
    "forbidden_words": ({"words": ["very"]}, "It is quite good.", "It is Very good."),
    "lowercase": ({}, "all quiet here.", "All quiet here."),
    "uppercase": ({}, "ALL QUIET HERE.", "ALL QUIET HERe."),
    "json_format": ({}, '```json\n{"a": [1, 2]}\n```', "{'a': 1}"),
    "bullet_count": ({"num": 2}, "Intro\n* one\n* two", "* one\n* two\n- three"),
    "numbered_sections": ({"num": 2}, "Section 1\nfoo\nSection 2\nbar", "Section 1\nfoo\nSection 3\nbar"),
    "starts_with": ({"phrase": "Dear team"}, "dear team, hello", "Hello, dear team"),
    "ends_with": ({"phrase": "Any other questions?"}, "That is all. Any other questions?", "Any other questions? No."),
    "quotation": ({}, '"wrapped in quotes"', '"only opened'),
    "placeholders": ({"num": 2}, "Send it to [name] at [address].", "Send it to [name]."),
    "title": ({}, "<<A Song>>\nla la", "<A Song>\nla la"),
    "language": (
        {"language": "de"},
        "Der Hund ist nicht mit dem Ball auf die Straße gelaufen, und das ist auch gut so, denn es war für den "
        "Hund zu gefährlich und die Kinder sind auch im Haus.",
        "The dog did not run onto the street with the ball, and that is good, because it was too dangerous for "
        "the dog and the children are in the house.",
    ),
    "no_commas": ({}, "No commas here.", "One, two."),
    "highlighted_sections": ({"num": 2}, "*one* and *two*", "*one* and two"),
    "postscript": ({}, "Hello.\nP.S. see you", "Hello. PS see you"),
}


def test_at_least_15_checks_and_all_cases_cover_them():
    assert len(CHECKS) >= 15 and set(CASES) == set(CHECKS)


@pytest.mark.parametrize("check_id", sorted(CASES))
def test_check_follows_and_violates(check_id):
    params, good, bad = CASES[check_id]
    constraint = {"id": check_id, **params}
    assert validate_constraint(constraint) is None
    assert check_constraint(good, constraint) is True
    assert check_constraint(bad, constraint) is False
    assert instruction_text(constraint).strip()


def test_counts_against_hand_counts():
    assert count_words("Hello, world! It's a well-known test.") == 6
    assert count_sentences("One. Two? Three! And four") == 4
    assert count_sentences("It costs 3.5 dollars, e.g. today. Fine.") == 3
    assert count_sentences("") == 0


def test_validate_names_the_problem():
    assert "unknown constraint" in validate_constraint({"id": "rhyme"})
    assert "required ['num', 'relation']" in validate_constraint({"id": "length_words"})
    assert "relation must be" in validate_constraint({"id": "length_words", "relation": "around", "num": 3})
    assert "got ['num', 'typo']" in validate_constraint({"id": "bullet_count", "num": 3, "typo": 1})


def test_reward_partial_strict_and_masked():
    constraints = [{"id": "lowercase"}, {"id": "no_commas"}]
    completions = ["<think>\nR, Q\n</think>\n\nhello there", "</think>\n\nhello, there", "<think>\nunfinished"]
    partial = REWARDS.get("ifeval")()(["p"] * 4, completions + ["</think>x"],
                                      constraints=[constraints] * 3 + [[{"id": "rhyme"}]])  # fmt: skip
    assert partial.scores.tolist()[:3] == [1.0, 0.5, 0.0]  # the think block's capitals and commas do not count
    assert partial.reasons[3] == "bad_constraint"
    strict = REWARDS.get("ifeval")(strict=True)(["p"] * 3, completions, constraints=[constraints] * 3)
    assert strict.scores.tolist() == [1.0, 0.0, 0.0]

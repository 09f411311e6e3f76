"""Annotation: heuristic labelers, the trained classifier, the LM-judge interface, and the CLI."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest

from qwen3jax.data.annotate import annotate_record, get_labeler
from qwen3jax.data.annotate.__main__ import main as annotate_main
from qwen3jax.data.annotate.classifier import ClassifierLabeler, NgramClassifier
from qwen3jax.data.annotate.heuristics import (
    DOMAINS,
    DomainLabeler,
    EducationalValueLabeler,
    LanguageLabeler,
    SafetyLabeler,
)
from qwen3jax.data.annotate.judge import JudgeLabeler
from qwen3jax.data.corpus import synthetic
from qwen3jax.data.sources import open_source

ENGLISH = (
    "The committee decided that the new bridge would be built over the river, and it was completed in the "
    "spring. Because the old one was in poor condition, the town had to act quickly. "
) * 3
CODE = "import os\n\ndef walk(path):\n    for name in os.listdir(path):\n        yield name\n\nclass A:\n    x = 1\n"


@pytest.mark.parametrize(
    "text, language",
    [
        (ENGLISH, "en"),
        (
            "Der Hund ist nicht in dem Haus, und die Katze ist auch nicht da. Es ist ein schöner Tag für den Garten. "
            * 2,
            "de",
        ),
        ("Le chat est dans la maison et les enfants sont avec le chien pour une promenade dans le parc. " * 2, "fr"),
        ("El perro de la casa es grande y los niños juegan con el gato en el parque por la tarde. " * 2, "es"),
        ("今日はとても良い天気ですね。私たちは公園に行きました。", "ja"),
        ("我们今天去了公园，天气非常好，大家都很高兴。这是一个美丽的城市。", "zh"),
        ("오늘은 날씨가 정말 좋습니다. 우리는 공원에 갔습니다. 모두가 행복했습니다.", "ko"),
        ("Сегодня очень хорошая погода, и мы пошли в парк вместе с друзьями.", "ru"),
        ("1234 5678 !!", "und"),
    ],
)
def test_language_labeler(text, language):
    assert LanguageLabeler()(text) == {"language": language}


@pytest.mark.parametrize(
    "text, language",
    [
        ("The quick brown fox jumps over the lazy dog.", "en"),
        ("Where did you put my keys?", "en"),
        ("It was raining when they arrived at the station.", "en"),
        ("Das Wetter ist heute sehr schön.", "de"),
        ("Kannst du mir bitte das Salz geben?", "de"),
        ("Le chat dort sur le canapé.", "fr"),
        ("Il pleuvait quand ils sont arrivés à la gare.", "fr"),
        ("Mañana vamos a la playa con mis amigos.", "es"),
        ("El perro duerme en el sofá.", "es"),
        ("Il gatto dorme sul divano.", "it"),
        ("Pioveva quando sono arrivati alla stazione.", "it"),
        ("Não sei onde está o meu telefone.", "pt"),
        ("Meu irmão mora em uma pequena cidade perto da costa.", "pt"),
        ("De kat slaapt op de bank.", "nl"),
        ("Het regende toen ze op het station aankwamen.", "nl"),
        # Short texts that are not prose stay undetermined, although their words include stopwords.
        ("for i in range(10):\n    x = y + i\n", "und"),
        ("import numpy as np\nfrom a import b\n", "und"),
        ("https://example.com/a/b?c=d", "und"),
        ("asdf qwer zxcv uiop hjkl", "und"),
    ],
)
def test_language_labeler_on_one_sentence(text, language):
    assert LanguageLabeler()(text) == {"language": language}


def test_domain_labeler():
    label = DomainLabeler()
    assert label(CODE)["domain"] == "code"
    assert label(synthetic.generate("linear_equation", 0, 1).document())["domain"] == "math"
    bib = "@article{smith2020,\n  title={A Study},\n  author={Smith, J.},\n  journal={J},\n  year={2020}\n}\n"
    assert label(bib)["domain"] == "reference"
    legal = (
        "THE SOFTWARE IS PROVIDED AS IS, WITHOUT WARRANTY OF ANY KIND. IN NO EVENT SHALL THE AUTHORS BE LIABLE "
        "FOR ANY CLAIM, DAMAGES OR OTHER LIABILITY. Permission is hereby granted under this license. "
    ) * 2
    assert label(legal)["domain"] == "legal"
    science = (
        "The experiment measured protein expression in cells of two species; the energy spectra of the samples differ."
    )
    assert label(science)["domain"] == "science"
    assert label(ENGLISH)["domain"] == "prose"
    assert {label(t)["domain"] for t in (CODE, bib, legal, science, ENGLISH, "", "x")} <= set(DOMAINS)


def test_educational_value_orders_explanations_above_boilerplate():
    label = EducationalValueLabeler()
    lesson = (
        "# Photosynthesis\n\nPhotosynthesis is defined as the process by which plants convert light into chemical "
        "energy. For example, a leaf absorbs sunlight, and therefore it can produce glucose. In other words, the "
        "plant builds sugar from carbon dioxide and water.\n\n1. Light is absorbed by chlorophyll.\n2. Water is "
        "split, which releases oxygen.\n3. The resulting energy is used to build sugar. This shows how the "
        "structure of the leaf supports its function. We can describe each step with a simple equation.\n"
    )
    spam = "Click here to subscribe! https://spam.example.com www.spam.example.com Sign up now! Log in! " * 5
    assert label(lesson)["edu_score"] >= 4
    assert label(spam)["edu_score"] <= 1
    assert all(0 <= label(t)["edu_score"] <= 5 for t in (CODE, "", "x"))


def test_safety_labeler():
    label = SafetyLabeler()
    assert label(ENGLISH) == {"safety": "ok", "safety_reasons": []}
    assert label("write to jane.doe@example.com today")["safety_reasons"] == ["pii_email"]
    assert "pii_card" in label("card 4111 1111 1111 1111 expires soon")["safety_reasons"]
    assert "pii_card" not in label("card 4111 1111 1111 1112 fails the Luhn check")["safety_reasons"]
    assert label("my ssn is 123-45-6789")["safety"] == "flagged"


def test_annotate_record_and_registry():
    labelers = [get_labeler(name) for name in ("language", "domain", "edu", "safety")]
    record = annotate_record({"body": CODE, "domain": "given"}, labelers, text_key="body")
    assert record["domain"] == "given" and record["language"] == "und" and "edu_score" in record  # Too few words.
    assert (
        annotate_record({"body": CODE, "domain": "given"}, labelers, text_key="body", overwrite=True)["domain"]
        == "code"
    )
    with pytest.raises(ValueError, match="unknown labeler 'sentiment'"):
        get_labeler("sentiment")
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        get_labeler("classifier:missing.npz")


def _labelled_examples():
    """Code, arithmetic problems and prose: three topics a bag of n-grams separates well."""
    rng = np.random.default_rng(0)
    names = ["alpha", "beta", "count", "index", "value", "items", "total", "result"]
    subjects = ["The river", "A small town", "The old teacher", "Our neighbour", "The winter market"]
    events = ["was quiet in the morning", "welcomed many visitors", "told a long story", "closed early that day"]
    examples = []
    for i in range(60):
        a, b = rng.choice(names, 2, replace=False)
        examples.append((f"def {a}_{i}({b}):\n    return [{b} for {b} in range({i})]\n", "code"))
        examples.append((synthetic.generate("arithmetic", 1, i).document(), "math"))
        examples.append((f"{rng.choice(subjects)} {rng.choice(events)}, and everyone {rng.choice(events)}.", "prose"))
    return examples


def test_classifier_learns_and_round_trips(tmp_path):
    examples = _labelled_examples()
    train, held_out = examples[:120], examples[120:]
    classifier = NgramClassifier.train([t for t, _ in train], [y for _, y in train], num_buckets=1 << 12, steps=60)
    accuracy = np.mean([classifier.predict(t)[0] == y for t, y in held_out])
    assert accuracy >= 0.95, accuracy
    path = tmp_path / "topic.npz"
    ClassifierLabeler(classifier, "topic").save(path)
    labeler = get_labeler(f"classifier:{path}")
    assert labeler.fields == ("topic", "topic_confidence")
    for text, _ in held_out[:10]:
        out = labeler(text)
        assert out["topic"] == classifier.predict(text)[0] and 0 < out["topic_confidence"] <= 1
    with pytest.raises(ValueError, match="two distinct labels"):
        NgramClassifier.train(["a", "b"], ["x", "x"])


def test_judge_labeler_parses_scores_and_counts_failures():
    prompts = []

    def fake_model(prompt: str) -> str:
        prompts.append(prompt)
        return {"good": "Clear and useful.\nScore: 4", "bad": "Score: 9", "none": "I cannot rate this."}[
            prompt.split("<<<\n")[1].split("\n>>>")[0]
        ]

    judge = JudgeLabeler(fake_model, field="edu_lm")
    assert judge("good") == {"edu_lm": 4}
    assert judge("bad") == {"edu_lm": None} and judge("none") == {"edu_lm": None}
    assert judge.unparsed == 2
    assert "from 0 to 5" in prompts[0]


def test_annotate_cli(write_jsonl, tmp_path, capsys):
    records = [{"text": ENGLISH, "id": 1}, {"text": CODE, "id": 2}, {"content": "no text field"}, "{broken"]
    path = write_jsonl("in.jsonl", records)
    out = tmp_path / "out.array_record"
    assert annotate_main(["label", path, "--output", str(out), "--max_bad_fraction", "0.6", "--min_records", "1"]) == 0
    source = open_source("arrayrecord", str(out))
    written = [json.loads(source[i].payload) for i in range(len(source))]
    assert [r["id"] for r in written] == [1, 2]
    assert [r["domain"] for r in written] == ["prose", "code"] and all("edu_score" in r for r in written)
    printed = capsys.readouterr().out
    assert "domain" in printed and "malformed_json=1" in printed and "missing_text=1" in printed
    strict = ["label", path, "--output", str(tmp_path / "o.jsonl"), "--max_bad_fraction", "0.1", "--min_records", "1"]
    assert annotate_main(strict) == 1
    assert "first offenders" in capsys.readouterr().err.lower()
    assert not list(tmp_path.glob("*o.jsonl"))  # a failed run leaves neither the output nor its partial file


def test_annotate_cli_never_replaces_what_a_user_saved(write_jsonl, tmp_path, capsys):
    path = write_jsonl("in.jsonl", [{"content": ENGLISH, "text": "a title", "id": 1}])
    original = pathlib.Path(path).read_bytes()
    # The output is an input: refused whatever the flags, the input untouched.
    for flags in ([], ["--replace_output"]):
        assert annotate_main(["label", path, "--output", path, "--text_key", "content", *flags]) == 2
        assert "is one of the inputs" in capsys.readouterr().err and pathlib.Path(path).read_bytes() == original
    out = tmp_path / "out.jsonl"
    out.write_text("kept\n")
    assert annotate_main(["label", path, "--output", str(out), "--text_key", "content"]) == 2
    assert "--replace_output" in capsys.readouterr().err and out.read_text() == "kept\n"
    assert annotate_main(["label", path, "--output", str(out), "--text_key", "content", "--replace_output"]) == 0
    # A field called "text" is a label like any other when the text is elsewhere.
    record = json.loads(out.read_text())
    assert (record["content"], record["text"], record["id"]) == (ENGLISH, "a title", 1) and "language" in record
    missing = tmp_path / "missing.jsonl"
    assert annotate_main(["label", str(missing), "--output", str(tmp_path / "x.jsonl")]) == 2
    err = capsys.readouterr().err
    assert "error: input file not found" in err and "Traceback" not in err and not (tmp_path / "x.jsonl").exists()


def test_classifier_cli(write_jsonl, tmp_path):
    path = write_jsonl("labelled.jsonl", [{"text": t, "topic": y} for t, y in _labelled_examples()])
    model = tmp_path / "clf.npz"
    assert annotate_main(["train", path, "--label_field", "topic", "--output", str(model), "--steps", "40"]) == 0
    out = tmp_path / "labelled_out.jsonl"
    assert annotate_main(["label", path, "--output", str(out), "--labelers", f"classifier:{model}", "--overwrite"]) == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert np.mean([r["topic"] == y for r, (_, y) in zip(lines, _labelled_examples())]) > 0.95

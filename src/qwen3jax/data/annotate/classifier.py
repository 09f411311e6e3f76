"""A small model-based labeler: a linear classifier over hashed word n-grams, trained on labelled examples.

The model is fastText's: the document vector is the mean of the learned vectors of its (hashed) word unigrams
and bigrams, followed by a softmax over the labels — i.e. multinomial logistic regression on normalised hashed
bag-of-n-gram features. It trains in seconds on CPU with optax (full batch, Adam) and labels a document in about
a millisecond with numpy, so it can annotate whole corpora. Hashing uses CRC32, stable across processes.
"""

from __future__ import annotations

import os
import re
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from qwen3jax.data.annotate.base import Labeler

_WORD = re.compile(r"\w+")
_MAX_FEATURES = 2048  # n-grams read per document (its first words): bounded cost per document.


def features(text: str, num_buckets: int) -> np.ndarray:
    """Hashed ids of the lower-cased word unigrams and bigrams of `text` (at most _MAX_FEATURES)."""
    words = _WORD.findall(text[: _MAX_FEATURES * 8].lower())[: _MAX_FEATURES // 2]
    grams = words + [f"{a} {b}" for a, b in zip(words, words[1:])]
    if not grams:
        grams = ["<empty>"]
    return np.fromiter((zlib.crc32(g.encode()) % num_buckets for g in grams), dtype=np.int32, count=len(grams))


class NgramClassifier:
    """Predicts one of `labels` for a text. Create with `train`, persist with `save`/`load`."""

    def __init__(self, labels: Sequence[str], embeddings: np.ndarray, bias: np.ndarray):
        if embeddings.shape[1] != len(labels) or bias.shape != (len(labels),):
            raise ValueError(f"weights of shape {embeddings.shape}/{bias.shape} do not match {len(labels)} labels")
        self.labels = tuple(labels)
        self.embeddings = np.asarray(embeddings, np.float32)
        self.bias = np.asarray(bias, np.float32)

    @property
    def num_buckets(self) -> int:
        return self.embeddings.shape[0]

    def probabilities(self, text: str) -> np.ndarray:
        logits = self.embeddings[features(text, self.num_buckets)].mean(axis=0) + self.bias
        exp = np.exp(logits - logits.max())
        return exp / exp.sum()

    def predict(self, text: str) -> tuple[str, float]:
        """The most probable label and its probability."""
        p = self.probabilities(text)
        return self.labels[int(p.argmax())], float(p.max())

    def save(self, path: str | os.PathLike, **metadata: str) -> None:
        """Writes an `.npz` file; `metadata` strings are stored alongside (e.g. the labeler's output field)."""
        extra = {key: np.array(value) for key, value in metadata.items()}
        np.savez(path, labels=np.array(self.labels), embeddings=self.embeddings, bias=self.bias, **extra)

    @classmethod
    def load(cls, path: str | os.PathLike) -> NgramClassifier:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"classifier file not found: {path}")
        with np.load(path, allow_pickle=False) as data:
            return cls([str(x) for x in data["labels"]], data["embeddings"], data["bias"])

    @classmethod
    def train(
        cls,
        texts: Sequence[str],
        labels: Sequence[str],
        *,
        num_buckets: int = 1 << 16,
        steps: int = 100,
        learning_rate: float = 0.1,
        weight_decay: float = 1e-4,
        seed: int = 0,
    ) -> NgramClassifier:
        """Fits the classifier to labelled examples (full-batch AdamW on the softmax cross-entropy)."""
        import jax  # pylint: disable=import-outside-toplevel
        import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
        import optax  # pylint: disable=import-outside-toplevel

        if len(texts) != len(labels) or not texts:
            raise ValueError(f"need as many labels as texts (got {len(texts)} texts, {len(labels)} labels)")
        names = sorted(set(labels))
        if len(names) < 2:
            raise ValueError(f"need at least two distinct labels to train a classifier, got {names}")
        # Distinct ids per document weighted by their share of its n-grams: the same mean as at prediction time,
        # over far fewer gathered rows.
        bags = [np.unique(features(t, num_buckets), return_counts=True) for t in texts]
        width = max(len(ids) for ids, _ in bags)
        feature_ids = np.zeros((len(bags), width), np.int32)
        weights = np.zeros((len(bags), width), np.float32)
        for i, (ids, counts) in enumerate(bags):
            feature_ids[i, : len(ids)] = ids
            weights[i, : len(ids)] = counts / counts.sum()
        targets = np.array([names.index(label) for label in labels], np.int32)

        def loss_fn(params: dict[str, Any]) -> jax.Array:
            doc = jnp.einsum("bf,bfk->bk", weights, params["embeddings"][feature_ids])
            logits = doc + params["bias"]
            return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()

        key = jax.random.PRNGKey(seed)
        params = {
            "embeddings": 0.01 * jax.random.normal(key, (num_buckets, len(names)), jnp.float32),
            "bias": jnp.zeros(len(names), jnp.float32),
        }
        optimizer = optax.adamw(learning_rate, weight_decay=weight_decay)
        state = optimizer.init(params)

        @jax.jit
        def step(params, state):
            loss, grads = jax.value_and_grad(loss_fn)(params)
            updates, state = optimizer.update(grads, state, params)
            return optax.apply_updates(params, updates), state, loss

        for _ in range(steps):
            params, state, _ = step(params, state)
        return cls(names, np.asarray(params["embeddings"]), np.asarray(params["bias"]))


class ClassifierLabeler(Labeler):
    """Labels records with a trained NgramClassifier: `{field: label, f"{field}_confidence": probability}`."""

    name = "classifier"

    def __init__(self, classifier: NgramClassifier, field: str):
        self.classifier = classifier
        self.field = field
        self.fields = (field, f"{field}_confidence")

    def __call__(self, text: str) -> dict[str, Any]:
        label, probability = self.classifier.predict(text)
        return {self.field: label, f"{self.field}_confidence": round(probability, 4)}

    def save(self, path: str | os.PathLike) -> None:
        """Saves the classifier with the field it writes (the `.npz` that `classifier:PATH` loads)."""
        self.classifier.save(path, field=self.field)

    @classmethod
    def load(cls, path: str | os.PathLike) -> ClassifierLabeler:
        classifier = NgramClassifier.load(path)
        with np.load(path, allow_pickle=False) as data:
            field = str(data["field"]) if "field" in data else "label"
        return cls(classifier, field)

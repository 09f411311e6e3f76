"""Real text that ships with every installation of this project: the Python standard library (its language
reference, IDLE manual and source code) and the pinned dependencies (package descriptions, NumPy's docstrings, the
dataset cards and citations of TensorFlow Datasets). Nobody on this project wrote any of it.

Each collector yields `RawDoc`s in a fixed order (sorted paths), so the corpus is deterministic for a given Python
version and set of pinned package versions. Neighbouring documents are related (same package, same manual), which
the S3 long-context mix relies on when it concatenates short documents.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.metadata
import importlib.util
import inspect
import pathlib
import sysconfig
from collections.abc import Iterator

from qwen3jax.data.corpus.clean import clean_text, html_to_text, split_paragraphs

# Distributions whose README (the METADATA long description) is collected: the project's pinned dependencies.
PINNED_DISTRIBUTIONS = (
    "jax",
    "jaxlib",
    "flax",
    "optax",
    "orbax-checkpoint",
    "grain",
    "tensorflow-datasets",
    "sentencepiece",
    "ml-collections",
    "safetensors",
    "tokenizers",
    "numpy",
)
# Standard-library directories that are not worth training on: tests, bundled wheels, generated codec tables.
_STDLIB_SKIP_DIRS = {
    "test",
    "tests",
    "idle_test",
    "site-packages",
    "__pycache__",
    "ensurepip",
    "encodings",
    "pydoc_data",
    "lib2to3",
    "turtledemo",
}
_MIN_CHARS = 200


@dataclasses.dataclass(frozen=True)
class RawDoc:
    source: str  # Which collector (and embedded source) the document belongs to.
    group: str  # Related documents share a group (package, manual, dataset).
    title: str
    text: str


def _docs(source: str, group: str, title: str, text: str, max_chars: int) -> Iterator[RawDoc]:
    """Cleaned document(s) for one text; long texts are split into consecutive parts of at most `max_chars`."""
    text = clean_text(text)
    if len(text) < _MIN_CHARS:
        return
    parts = split_paragraphs(text, max_chars)
    for i, part in enumerate(parts):
        if len(part) >= _MIN_CHARS:
            yield RawDoc(source, group, title if len(parts) == 1 else f"{title} (part {i + 1})", part)


def _package_dir(module: str) -> pathlib.Path | None:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return pathlib.Path(next(iter(spec.submodule_search_locations)))


def _read(path: pathlib.Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace")


def python_docs(max_chars: int) -> Iterator[RawDoc]:
    """The Python language reference topics (the text behind `help('if')`) and the IDLE manual."""
    from pydoc_data import topics  # pylint: disable=import-outside-toplevel

    for name in sorted(topics.topics):
        yield from _docs("python_docs", "pydoc_topics", name, topics.topics[name], max_chars)
    stdlib = pathlib.Path(sysconfig.get_paths()["stdlib"])
    idle_help = stdlib / "idlelib" / "help.html"
    if idle_help.is_file():
        yield from _docs("python_docs", "idle_manual", "IDLE", html_to_text(_read(idle_help)), max_chars)
    for name in ("NEWS.txt", "README.txt", "HISTORY.txt", "extend.txt"):
        path = stdlib / "idlelib" / name
        if path.is_file():
            yield from _docs("python_docs", "idle_notes", name, _read(path), max_chars)


def python_code(max_chars: int) -> Iterator[RawDoc]:
    """Source files of the standard library, one document per file (long files in consecutive parts)."""
    stdlib = pathlib.Path(sysconfig.get_paths()["stdlib"])
    for path in sorted(stdlib.rglob("*.py")):
        relative = path.relative_to(stdlib)
        if _STDLIB_SKIP_DIRS.intersection(relative.parts[:-1]):
            continue
        group = relative.parts[0] if len(relative.parts) > 1 else relative.stem
        yield from _docs("python_code", group, str(relative), _read(path), max_chars)


def package_docs(max_chars: int) -> Iterator[RawDoc]:
    """READMEs of the pinned dependencies and the dataset cards of TensorFlow Datasets."""
    for name in PINNED_DISTRIBUTIONS:
        try:
            metadata = importlib.metadata.metadata(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        body = metadata.get_payload() or metadata.get("Description") or ""  # type: ignore[attr-defined]
        yield from _docs("package_docs", name, f"{name} README", body, max_chars)
    yield from _tfds_texts("package_docs", "tfds_cards", "README.md", "_DESCRIPTION", max_chars)


def references(max_chars: int) -> Iterator[RawDoc]:
    """BibTeX citations of the TensorFlow Datasets, one document per dataset."""
    yield from _tfds_texts("references", "tfds_citations", "CITATIONS.bib", "_CITATION", max_chars)


def _tfds_texts(source: str, group: str, card_file: str, constant: str, max_chars: int) -> Iterator[RawDoc]:
    """Per-dataset texts of TensorFlow Datasets: the `card_file` of each dataset folder, then the `constant`
    strings of the older builder modules."""
    tfds = _package_dir("tensorflow_datasets")
    if tfds is None:
        return
    for path in sorted((tfds / "datasets").glob(f"*/{card_file}")):
        yield from _docs(source, group, path.parent.name, _read(path), max_chars)
    for path, text in _module_string_constants(tfds, constant):
        yield from _docs(source, group, path.stem, text, max_chars)


def numpy_docs(max_chars: int) -> Iterator[RawDoc]:
    """NumPy's docstrings (mathematics and numerics prose, with formulas and examples), one per function/class."""
    numpy_dir = _package_dir("numpy")
    if numpy_dir is None:
        return
    for path in sorted(numpy_dir.rglob("*.py")):
        relative = path.relative_to(numpy_dir.parent)
        if {"tests", "testing", "_pyinstaller"}.intersection(relative.parts):
            continue
        module = ".".join(relative.with_suffix("").parts)
        for name, doc in _docstrings(path):
            yield from _docs("numpy_docs", module, f"{module}.{name}", f"{module}.{name}\n\n{doc}", max_chars)


def _parse(path: pathlib.Path) -> ast.Module | None:
    try:
        return ast.parse(_read(path))
    except (SyntaxError, ValueError):  # Version-specific syntax in a file we only read for its text.
        return None


def _docstrings(path: pathlib.Path) -> Iterator[tuple[str, str]]:
    tree = _parse(path)
    if tree is None:
        return
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            doc = ast.get_docstring(node, clean=False)
            if doc:
                yield node.name, inspect.cleandoc(doc)


def _module_string_constants(root: pathlib.Path, name: str) -> Iterator[tuple[pathlib.Path, str]]:
    """Module-level string constants called `name` in the non-test modules under `root`."""
    for path in sorted(root.rglob("*.py")):
        if path.name.endswith("_test.py") or "testing" in path.parts:
            continue
        source = _read(path)
        if f"{name} =" not in source:  # Cheap pre-filter: parsing every module of a large package is slow.
            continue
        tree = _parse(path)
        for node in tree.body if tree else ():
            if (
                isinstance(node, ast.Assign)
                and any(isinstance(t, ast.Name) and t.id == name for t in node.targets)
                and isinstance(node.value, ast.Constant)
                and isinstance(node.value.value, str)
            ):
                yield path, inspect.cleandoc(node.value.value)


COLLECTORS = {
    "python_docs": python_docs,
    "python_code": python_code,
    "package_docs": package_docs,
    "numpy_docs": numpy_docs,
    "references": references,
}

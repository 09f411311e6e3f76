"""Text cleaning and splitting shared by every real-text collector of the embedded corpus."""

from __future__ import annotations

import html.parser
import re
import unicodedata

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u200b\ufeff]")
_TRAILING_SPACE = re.compile(r"[ \t]+$", re.MULTILINE)
_BLANK_RUN = re.compile(r"\n{3,}")


def clean_text(text: str) -> str:
    """Normalises newlines and Unicode (NFC), drops control and zero-width characters, strips trailing spaces and
    collapses runs of blank lines. Lone surrogates (undecodable input) become U+FFFD."""
    text = text.encode("utf-8", "replace").decode("utf-8")
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = unicodedata.normalize("NFC", text)
    text = _CONTROL.sub("", text)
    text = _TRAILING_SPACE.sub("", text)
    text = _BLANK_RUN.sub("\n\n", text)
    return text.strip("\n")


def split_paragraphs(text: str, max_chars: int) -> list[str]:
    """Splits `text` at blank lines into consecutive parts of at most `max_chars` (a single longer paragraph is
    cut at line breaks, then hard). Parts keep their order, so they stay "related" neighbours in the corpus."""
    if len(text) <= max_chars:
        return [text]
    parts, current = [], ""
    for block in _pieces(text, max_chars):
        if current and len(current) + 2 + len(block) > max_chars:
            parts.append(current)
            current = block
        else:
            current = f"{current}\n\n{block}" if current else block
    if current:
        parts.append(current)
    return parts


def _pieces(text: str, max_chars: int) -> list[str]:
    pieces = []
    for paragraph in text.split("\n\n"):
        if len(paragraph) <= max_chars:
            pieces.append(paragraph)
            continue
        for line in paragraph.split("\n"):
            pieces.extend(line[i : i + max_chars] for i in range(0, max(len(line), 1), max_chars))
    return pieces


class _HTMLText(html.parser.HTMLParser):
    _SKIP = {"script", "style", "head"}
    _BLOCK = {"p", "div", "br", "li", "pre", "tr", "dt", "dd", "blockquote", "section", "table"}
    _HEADING = {"h1", "h2", "h3", "h4", "h5", "h6"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skipping = 0
        self._pre = 0

    def handle_starttag(self, tag, attrs):
        if tag in self._SKIP:
            self._skipping += 1
        elif tag in self._BLOCK or tag in self._HEADING:
            self.parts.append("\n\n")
            if tag == "li":
                self.parts.append("- ")
            elif tag == "pre":
                self._pre += 1

    def handle_endtag(self, tag):
        if tag in self._SKIP:
            self._skipping = max(0, self._skipping - 1)
        elif tag in self._BLOCK or tag in self._HEADING:
            self.parts.append("\n\n")
            if tag == "pre":
                self._pre = max(0, self._pre - 1)

    def handle_data(self, data):
        if self._skipping:
            return
        if not self._pre:
            data = re.sub(r"\s+", " ", data)
            if not self.parts or self.parts[-1].endswith("\n"):
                data = data.lstrip(" ")
        self.parts.append(data)


def html_to_text(markup: str) -> str:
    """Visible text of an HTML page with paragraph structure kept (stdlib parser: no dependency needed)."""
    parser = _HTMLText()
    parser.feed(markup)
    parser.close()
    return "".join(parser.parts)

"""Rendering through a checkpoint's own jinja `chat_template`, in a sandbox.

A template that ships with a checkpoint is untrusted code, so it runs in jinja2's ImmutableSandboxedEnvironment
(no attribute escapes, no mutation of the messages). The environment matches HF transformers' chat templating
(trim_blocks, lstrip_blocks, loop controls, HF's `tojson`, `raise_exception`), so a checkpoint renders here as it
does under `tokenizer.apply_chat_template`.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from qwen3jax.chat.messages import to_json


def _raise_exception(message: str) -> NoReturn:
    raise jinja2.exceptions.TemplateError(message)


_ENV = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
_ENV.filters["tojson"] = to_json
_ENV.globals["raise_exception"] = _raise_exception


@functools.lru_cache(maxsize=16)
def _compile(template: str) -> jinja2.Template:
    return _ENV.from_string(template)


def render_with_jinja(
    template: str,
    messages: Sequence[Mapping[str, Any]],
    *,
    tools: Sequence[Mapping[str, Any]] | None = None,
    add_generation_prompt: bool = False,
    enable_thinking: bool = True,
    **context: Any,
) -> str:
    """Render `messages` with the jinja `template`; extra keyword arguments become template variables."""
    return _compile(template).render(
        messages=messages,
        tools=tools,
        add_generation_prompt=add_generation_prompt,
        enable_thinking=enable_thinking,
        **context,
    )


def load_chat_template(folder: str | Path) -> str:
    """The chat template of an HF checkpoint folder: `chat_template.jinja` if present (what recent transformers
    save, and what it reads first), else the `chat_template` string in `tokenizer_config.json`."""
    folder = Path(folder)
    jinja_file = folder / "chat_template.jinja"
    if jinja_file.is_file():
        return jinja_file.read_text(encoding="utf-8")
    config_file = folder / "tokenizer_config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{folder} has neither chat_template.jinja nor tokenizer_config.json")
    template = json.loads(config_file.read_text(encoding="utf-8")).get("chat_template")
    if not isinstance(template, str):
        raise ValueError(
            f"{config_file} has no single chat_template string (got {type(template).__name__}); "
            "named template lists are not supported"
        )
    return template

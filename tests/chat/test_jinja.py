"""Loading a checkpoint's chat template and rendering it in the sandbox with HF's filters and globals."""

from __future__ import annotations

import json

import jinja2
import pytest
from jinja2.exceptions import SecurityError

from qwen3jax.chat import load_chat_template, render_with_jinja

USER = [{"role": "user", "content": "q"}]


def test_load_from_tokenizer_config(qwen3_tokenizer_dir, official_template):
    template = load_chat_template(qwen3_tokenizer_dir)
    assert template == official_template
    assert "enable_thinking" in template and "<tool_response>" in template


def test_chat_template_jinja_file_takes_precedence(tmp_path):
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": "from config"}))
    assert load_chat_template(tmp_path) == "from config"
    (tmp_path / "chat_template.jinja").write_text("from file", encoding="utf-8")
    assert load_chat_template(tmp_path) == "from file"


def test_missing_template_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither chat_template.jinja nor tokenizer_config.json"):
        load_chat_template(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|im_end|>"}))
    with pytest.raises(ValueError, match="no single chat_template string"):
        load_chat_template(tmp_path)


def test_tojson_behaves_like_hf():
    # jinja's own tojson would sort keys and escape <, > and & as \u003c...; HF's keeps both as written.
    template = "{{ tools[0] | tojson }}|{{ tools[0] | tojson(indent=1) }}"
    out = render_with_jinja(template, USER, tools=[{"b": "<&é>", "a": 1}])
    assert out == '{"b": "<&é>", "a": 1}|{\n "b": "<&é>",\n "a": 1\n}'


def test_whitespace_control_and_loop_controls_like_hf():
    # trim_blocks eats the newline after a tag, lstrip_blocks the indent before one; `continue` is an extension.
    template = (
        "{% for m in messages %}\n  {% if m.role == 'tool' %}{% continue %}{% endif %}\n"
        "{{ m.content }};\n{% endfor %}"
    )
    messages = [{"role": "user", "content": "a"}, {"role": "tool", "content": "b"}, {"role": "user", "content": "c"}]
    assert render_with_jinja(template, messages) == "a;\nc;\n"


def test_raise_exception_and_extra_context():
    template = "{% if not bos_token %}{{ raise_exception('need a bos_token') }}{% endif %}{{ bos_token }}"
    assert render_with_jinja(template, USER, bos_token="<s>") == "<s>"
    with pytest.raises(jinja2.exceptions.TemplateError, match="need a bos_token"):
        render_with_jinja(template, USER, bos_token="")


@pytest.mark.parametrize(
    "template",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ messages.append(1) }}",
        "{% set _ = messages.pop() %}",
        "{{ messages[0].update({'content': 'hijacked'}) }}",
    ],
)
def test_sandbox_blocks_escapes_and_mutation(template):
    messages = [{"role": "user", "content": "q"}]
    with pytest.raises(SecurityError):
        render_with_jinja(template, messages)
    assert messages == [{"role": "user", "content": "q"}]

"""`python -m qwen3jax.generate` and `python -m qwen3jax.chat_repl` end to end on a tiny random model with a tiny
byte-level BPE tokenizer carrying the Qwen3 special tokens."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys

import jax
import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from qwen3jax import chat_repl
from qwen3jax import generate as generate_cli
from qwen3jax.chat import apply_chat_template
from qwen3jax.convert import save_hf
from qwen3jax.convert.native import save_native
from qwen3jax.data.tokenizer import SPECIAL_TOKENS, load_tokenizer
from qwen3jax.sample import cli, generate

from .helpers import DENSE, build

CFG = DENSE.replace(vocab_size=512)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320, special_tokens=list(SPECIAL_TOKENS), initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(["hello there, how are you today?", "I am thinking about the answer."] * 4, trainer)
    bpe.save(str(root / "tokenizer.json"))
    model = build(CFG, seed=2)
    save_hf(model, CFG, root / "hf")
    shutil.copy(root / "tokenizer.json", root / "hf" / "tokenizer.json")
    save_native(model, root / "native")
    return root, model


def _run(module: str, *args: str, stdin: str = "") -> subprocess.CompletedProcess:
    env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_COMPILATION_CACHE_DIR=jax.config.jax_compilation_cache_dir)
    return subprocess.run(
        [sys.executable, "-m", module, *args], input=stdin, capture_output=True, text=True, env=env, timeout=300
    )


@pytest.mark.slow
def test_generate_prints_thinking_and_answer_per_sample(files):
    root, _ = files
    done = _run("qwen3jax.generate", "--hf", str(root / "hf"), "--prompt", "hello there", "--n", "2", "--budget", "3",
                "--max-new-tokens", "10")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert out.count("--- thinking ---") == 2 and out.count("--- answer ---") == 2
    assert "=== sample 1/2: " in out and "=== sample 2/2: " in out


@pytest.mark.slow
def test_chat_repl_streams_replies_and_keeps_history(files):
    root, model = files
    tokenizer = load_tokenizer(root / "tokenizer.json")
    stops = [tokenizer.token_to_id("<|im_end|>"), tokenizer.token_to_id("<|endoftext|>")]
    done = _run(
        "qwen3jax.chat_repl", "--ckpt", str(root / "native"), "--tokenizer", str(root / "tokenizer.json"),
        "--temperature", "0", "--max-new-tokens", "8", stdin="hello there\n/no_think\nhow are you\n/exit\n",
    )
    assert done.returncode == 0, done.stderr
    assert "[thinking off]" in done.stdout
    streamed = done.stdout.split("assistant> ")[1:]
    assert len(streamed) == 2

    # The same two turns by hand: greedy replies to the rendered history (thinking, then non-thinking).
    def reply(messages, thinking):
        prompt = tokenizer.encode(apply_chat_template(messages, add_generation_prompt=True, enable_thinking=thinking))
        ids = generate(model, [prompt], max_new_tokens=8, stop_ids=stops, vocab_limit=tokenizer.vocab_size).tokens[0]
        return tokenizer.decode([t for t in ids if t not in stops])

    first = reply([{"role": "user", "content": "hello there"}], True)
    second = reply(
        [{"role": "user", "content": "hello there"}, {"role": "assistant", "content": first},
         {"role": "user", "content": "how are you"}],
        False,
    )
    assert streamed[0].startswith(first) and streamed[1].startswith(second)


@pytest.mark.parametrize("main", [generate_cli.main, chat_repl.main], ids=["generate", "chat_repl"])
def test_errors_are_one_clear_line(files, tmp_path, capsys, main):
    root, _ = files
    prompt = ["--prompt", "hi"] if main is generate_cli.main else []
    assert main(["--ckpt", str(tmp_path / "missing"), *prompt]) == 2
    assert capsys.readouterr().err.strip() == f"error: checkpoint directory {tmp_path / 'missing'} does not exist"
    assert main(["--ckpt", str(root / "native"), *prompt]) == 2  # no tokenizer.json there, no --tokenizer
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no tokenizer") and "\n" not in err
    with pytest.raises(SystemExit):
        main(["--hf", str(root / "hf"), "--top-p", "2", *prompt])
    assert "'2' is not in (0, 1]" in capsys.readouterr().err


def test_a_prompt_that_does_not_fit_the_context_is_one_error_line(files, capsys):
    root, _ = files
    too_many = str(CFG.max_position_embeddings)
    assert generate_cli.main(["--hf", str(root / "hf"), "--prompt", "hello there", "--max-new-tokens", too_many]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: the prompt is ") and "exceeds the model's context" in err and "\n" not in err


def test_chat_repl_refuses_a_turn_that_does_not_fit_and_goes_on(files, capsys, monkeypatch):
    root, _ = files
    monkeypatch.setattr(sys, "stdin", io.StringIO("hello there\n/no_think\n/exit\n"))
    too_many = str(CFG.max_position_embeddings - 5)
    assert chat_repl.main(["--hf", str(root / "hf"), "--max-new-tokens", too_many]) == 0
    out = capsys.readouterr().out
    assert "[not sent: the prompt is " in out and "assistant> " not in out and "[thinking off]" in out


class _Captured(Exception):
    pass


def _capture_mode(monkeypatch) -> list[bool]:
    """Make `ChatModel.reply` record the thinking mode it is asked for and stop there (no decoding)."""
    modes = []

    def reply(self, prompt_ids, args, thinking, **kwargs):
        modes.append(thinking)
        raise _Captured

    monkeypatch.setattr(cli.ChatModel, "reply", reply)
    return modes


@pytest.mark.parametrize(("system", "prompt"), [("Be brief. /no_think", "hello there"), (None, "hello /no_think")])
def test_generate_reads_soft_switches_in_the_system_message_and_the_prompt(files, monkeypatch, system, prompt):
    root, _ = files
    modes = _capture_mode(monkeypatch)
    with pytest.raises(_Captured):
        generate_cli.main(["--hf", str(root / "hf"), "--prompt", prompt, *(["--system", system] if system else [])])
    assert modes == [False]


def test_chat_repl_reads_a_soft_switch_in_the_system_message(files, monkeypatch, capsys):
    root, _ = files
    modes = _capture_mode(monkeypatch)
    monkeypatch.setattr(sys, "stdin", io.StringIO("hello there\n"))
    with pytest.raises(_Captured):
        chat_repl.main(["--hf", str(root / "hf"), "--system", "You are terse. /no_think"])
    assert modes == [False] and capsys.readouterr().out.startswith("thinking off")

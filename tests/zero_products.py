"""The post-training task a tiny model learns within CI's budget: zero products, `What is N times 0?` and `What is 0
times N?` (gold 0, the `math` verifier), 148 training and 32 held-out problems (held-out N), and SFT runs on them.

`sft_run` trains a model on the training prompts answered by `answer(rng)` (non-thinking chat): random digits give
a start that knows the answer format (one digit, then `<|im_end|>`) but not the answer (reasoning RL's start, and
the distillation student); "0" gives a model that answers every held-out problem right (the distillation teacher).
`grpo_config` is reasoning RL from the random-digit start, at the rate its learning check measured.
"""

import json
import random
from collections.abc import Callable
from pathlib import Path

import jax

from experiments import rl_reasoning, sft_chat
from qwen3jax.train.loop import Trainer
from tests.train.helpers import TINY_MODEL

VOCAB = 512  # the embedded corpus's tokenizer trained to 512 ids (TINY_MODEL's vocabulary)


def _write_jsonl(path: Path, records) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def write_prompts(root: Path) -> list[str]:
    """train.jsonl and eval.jsonl (query–verifier records) under `root`; returns the training queries."""
    problems = [f"What is {n} times 0?" for n in range(10, 100)] + [f"What is 0 times {n}?" for n in range(10, 100)]
    random.Random(0).shuffle(problems)
    held_out, train = problems[:32], problems[32:]
    for name, queries in (("train", train), ("eval", held_out)):
        records = [{"prompt": q, "gold": "0", "rewards": [{"name": "math"}]} for q in queries]
        _write_jsonl(root / f"{name}.jsonl", records)
    return train


def sft_run(root: Path, name: str, answer: Callable[[random.Random], str], *, model=None, steps: int = 60) -> Path:
    """An SFT run directory `root/name`: `model` (default TINY_MODEL) trained from scratch on the training prompts
    answered by `answer` (a data source named after it)."""
    rng = random.Random(1)
    data = _write_jsonl(root / f"{name}.jsonl", [
        {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": answer(rng)}],
         "enable_thinking": False} for q in write_prompts(root)
    ])  # fmt: skip
    train_chat_sft(data, root / name, source=answer.__name__, model=model, steps=steps)
    return root / name


def train_chat_sft(data: str, workdir: Path, *, source: str, seq_len: int = 64, model=None, steps: int = 60) -> None:
    """`model` (default TINY_MODEL) trained from scratch on the chat JSONL `data` (a data source named `source`,
    which seeds its shuffle), on one device (8 simulated devices would only cost compile time for a model this
    small): the start of the RL and distillation learning checks."""
    sft = sft_chat.get_config("tiny")
    sft.model.update(model or TINY_MODEL)
    sft.data.vocab_size = VOCAB
    sft.data.sources = {source: {"kind": "jsonl", "path": data, "format": "chat", "weight": 1.0}}
    sft.init_from = ""
    sft.seq_len, sft.global_batch, sft.steps, sft.log_every = seq_len, 16, steps, 20
    sft.eval.every, sft.samples.num, sft.checkpoint.async_save = 0, 0, False
    sft.optim.peak_lr, sft.optim.warmup_steps = 1e-2, 5
    Trainer(sft, workdir, jax.devices()[:1]).run()


def random_digits(rng: random.Random) -> str:
    return str(rng.randrange(10))


def grpo_config(root: Path, *, seed: int, steps: int, **batch_source):
    """experiments/rl_reasoning.py's tiny config on the zero-products problems from `root/sft`: 8 prompts x 8
    samples per step, 4-token answers, held-out greedy accuracy after the last step."""
    config = rl_reasoning.get_config("tiny")
    config.model.update(TINY_MODEL)
    config.data.vocab_size = VOCAB
    config.init_from, config.seed, config.steps = str(root / "sft"), seed, steps
    config.seq_len, config.global_batch = 48, 64  # 8 prompts x 8 samples
    config.batch_source.update(prompts=str(root / "train.jsonl"), max_new_tokens=4, **batch_source)
    config.loss.max_tokens = 4
    config.optim.peak_lr = 2e-3
    config.eval.update(every=steps, prompts=str(root / "eval.jsonl"), num_prompts=32, max_new_tokens=4)
    config.samples.num, config.checkpoint.async_save = 0, False
    return config

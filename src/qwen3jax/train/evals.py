"""Per-phase evaluation and samples, chosen by the experiment (`eval.name`, `samples.name`).

An evaluator is built with the `Trainer` and called as `evaluator(state) -> {metric: value}` (names `eval/...`);
a sampler as `sampler(state) -> text` for `samples.txt`. RL adds e.g. the mean verified reward on held-out prompts.

- `held_out_loss` (pretraining and SFT): the masked next-token cross-entropy over the batch source's held-out rows,
  i.e. over documents for text and over the trained assistant tokens for chat.
- samples `text`: greedy continuations of raw prompts; `chat`: greedy replies to user prompts rendered with the
  chat template, in thinking and in non-thinking mode.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from qwen3jax.registry import Registry
from qwen3jax.train.losses import next_token_scores
from qwen3jax.train.step import TrainState

if TYPE_CHECKING:
    from qwen3jax.train.loop import Trainer

EVALS: Registry[Any] = Registry("evaluator")
SAMPLES: Registry[Any] = Registry("sampler")


class EvalError(RuntimeError):
    """The evaluation cannot produce a number (e.g. no held-out tokens); the message says what to fix."""


@EVALS.register("held_out_loss")
class HeldOutLoss:
    """Mean masked next-token cross-entropy over the first `eval.batches` held-out batches of the batch source, in
    nats per token (`eval/loss`) and in bits per UTF-8 byte of the predicted text (`eval/bpb`: total nats / ln 2 /
    bytes, comparable across tokenizers and vocabulary sizes)."""

    def __init__(self, trainer: Trainer):
        self._trainer = trainer
        self._step = None

    def _compiled(self, state: TrainState):
        if self._step is None:
            vocab_slices = getattr(self._trainer.loss_fn, "vocab_slices", 1)  # the head as the training loss runs it
            graphdef = state.graphdef
            byte_lengths = self._trainer.tokenizer.token_byte_lengths
            vocab = self._trainer.model_cfg.vocab_size
            token_bytes = jnp.asarray(np.pad(byte_lengths, (0, vocab - len(byte_lengths))))

            def eval_step(params, batch):
                model = nnx.merge(graphdef, params)
                hidden = model(batch["tokens"], batch["positions"], batch["segment_ids"], head=False)
                scores, targets, valid = next_token_scores(model, hidden, batch, vocab_slices)
                target_bytes = jnp.sum(jnp.where(valid, token_bytes[targets], 0))
                return jnp.sum(scores.ce * valid), jnp.sum(valid), target_bytes

            self._step = jax.jit(eval_step)
        return self._step

    def __call__(self, state: TrainState) -> dict[str, float]:
        step = self._compiled(state)
        total, count, num_bytes = 0.0, 0.0, 0.0
        for i, batch in enumerate(self._trainer.source.eval_batches()):
            if i >= self._trainer.config.eval.batches:
                break
            s, n, b = step(state.params, batch)
            total, count, num_bytes = total + float(s), count + float(n), num_bytes + float(b)
        if not count:
            raise EvalError("the eval split yielded no target tokens; check the data config's held-out sources")
        return {"eval/loss": total / count, "eval/bpb": total / math.log(2) / max(num_bytes, 1.0), "eval/tokens": count}


def _generate(trainer: Trainer, state: TrainState, prompts: list[list[int]], stop_ids) -> list[list[int]]:
    from qwen3jax.sample import generate  # pylint: disable=import-outside-toplevel

    result = generate(state.model(), prompts, max_new_tokens=trainer.config.samples.max_new_tokens,
                      stop_ids=stop_ids, vocab_limit=trainer.tokenizer.vocab_size)  # fmt: skip
    return result.tokens


@SAMPLES.register("text")
class TextSamples:
    """Greedy continuations of the configured raw-text prompts."""

    def __init__(self, trainer: Trainer):
        self._trainer = trainer

    def __call__(self, state: TrainState) -> str:
        tok = self._trainer.tokenizer
        prompts = list(self._trainer.config.samples.prompts)[: self._trainer.config.samples.num]
        outputs = _generate(self._trainer, state, [tok.encode(p) for p in prompts], (tok.eos_id,))
        return "\n".join(f"--- prompt: {p!r}\n{p}{tok.decode(ids)}\n" for p, ids in zip(prompts, outputs))


@SAMPLES.register("chat")
class ChatSamples:
    """Greedy assistant replies to the configured prompts (one user message each) through the chat template, once
    with thinking and once without (the template's empty think block), stopping at `<|im_end|>`."""

    def __init__(self, trainer: Trainer):
        self._trainer = trainer

    def __call__(self, state: TrainState) -> str:
        from qwen3jax.chat import apply_chat_template  # pylint: disable=import-outside-toplevel

        tok = self._trainer.tokenizer
        prompts = list(self._trainer.config.samples.prompts)[: self._trainer.config.samples.num]
        cases = [(p, thinking) for p in prompts for thinking in (True, False)]
        rendered = [
            apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True, enable_thinking=thinking)
            for p, thinking in cases
        ]
        stop = (tok.token_to_id("<|im_end|>"), tok.eos_id)
        outputs = _generate(self._trainer, state, [tok.encode(r) for r in rendered], stop)
        return "\n".join(
            f"--- prompt ({'thinking' if thinking else 'non-thinking'}): {p!r}\n{r}{tok.decode(ids)}\n"
            for (p, thinking), r, ids in zip(cases, rendered, outputs)
        )

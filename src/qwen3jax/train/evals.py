"""Per-phase evaluation and samples, chosen by the experiment (`eval.name`, `samples.name`).

An evaluator is built with the `Trainer` and called as `evaluator(state) -> {metric: value}` (names `eval/...`);
a sampler as `sampler(state) -> text` for `samples.txt`. RL adds e.g. the mean verified reward on held-out prompts.

- `held_out_loss` (pretraining and SFT): the masked next-token cross-entropy over the batch source's held-out rows,
  i.e. over documents for text and over the trained assistant tokens for chat.
- `held_out_reward` (RL, SFT): greedy replies to held-out query–verifier prompts (`eval.prompts`: `embedded:<domain>`
  or a JSONL), in the mode `eval.thinking`, scored by `eval.rewards` (the run's `rewards` when empty); reports the
  mean reward, the accuracy (share of judged replies with the full reward), each reward's own mean, and writes the
  first replies to `eval_samples.jsonl`.
- `thinking_switch` (thinking-mode fusion): the share of greedy replies that follow `/think` (a non-empty think
  block) and `/no_think` (an empty one) on held-out prompts.
- `composite`: the evaluators of `eval.parts`, e.g. `["held_out_loss", "held_out_reward"]` for SFT phases that
  teach answers.
- samples `text`: continuations of raw prompts; `chat`: replies to user prompts rendered with the chat template, in
  thinking and in non-thinking mode; both decoded with the `samples` settings (temperature, top-k, top-p, presence
  penalty, seed; temperature 0: greedy).
"""

from __future__ import annotations

import json
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
    bytes, comparable across tokenizers and vocabulary sizes).

    With `eval.long_from` > 0 it also reports `eval/loss_long`: the loss on the targets at document positions at or
    beyond it (a long-context stage sets its predecessor's sequence length, so this is the loss where the model
    had never been trained before the stage)."""

    def __init__(self, trainer: Trainer):
        self._trainer = trainer
        self._long_from = int(trainer.config.eval.get("long_from", 0))
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
                # position t's target is the document's token at position t + 1
                long = valid & (batch["positions"] + 1 >= self._long_from)
                return jnp.sum(scores.ce * valid), jnp.sum(valid), target_bytes, jnp.sum(scores.ce * long), jnp.sum(long)

            self._step = jax.jit(eval_step)
        return self._step

    def __call__(self, state: TrainState) -> dict[str, float]:
        step = self._compiled(state)
        sums = np.zeros(5)  # nats, targets, bytes, nats and targets beyond long_from
        for i, batch in enumerate(self._trainer.source.eval_batches()):
            if i >= self._trainer.config.eval.batches:
                break
            sums += np.array([float(x) for x in step(state.params, batch)])
        total, count, num_bytes, long_total, long_count = sums.tolist()
        if not count:
            raise EvalError("the eval split yielded no target tokens; check the data config's held-out sources")
        result = {"eval/loss": total / count, "eval/bpb": total / math.log(2) / max(num_bytes, 1.0), "eval/tokens": count}
        if self._long_from:
            result["eval/loss_long"] = long_total / long_count if long_count else float("nan")
            result["eval/tokens_long"] = long_count
        return result


def chat_prompt_ids(tokenizer, record: dict[str, Any], thinking: bool, tools: list[dict] | None = None) -> list[int]:
    """A query–verifier record's prompt rendered with the chat template for generation in the given mode (with the
    `tools` schemas listed in the system block, when given)."""
    from qwen3jax.chat import encode_prompt  # pylint: disable=import-outside-toplevel

    messages = record["messages"] if "messages" in record else [{"role": "user", "content": record["prompt"]}]
    return encode_prompt(tokenizer, messages, tools=tools, enable_thinking=thinking)


def reply_text(tokenizer, ids, stop_ids, thinking: bool) -> str:
    """A generated reply as the rewards read it: the think block (generated, or the empty one a non-thinking prompt
    already holds) and the answer, without the stop token."""
    text = tokenizer.decode([t for t in ids if t not in stop_ids])
    return text if thinking else f"<think>\n\n</think>\n\n{text}"


SHOWN = 4  # replies written to eval_samples.jsonl per evaluation


def _write_samples(trainer: Trainer, state: TrainState, rows: list[dict[str, Any]]) -> None:
    """The first SHOWN rows of an evaluation, with its step, appended to the run's eval_samples.jsonl."""
    if trainer.primary:
        with open(trainer.workdir / "eval_samples.jsonl", "a", encoding="utf-8") as f:
            for row in rows[:SHOWN]:
                f.write(json.dumps({"step": int(state.step), **row}, ensure_ascii=False) + "\n")


@EVALS.register("held_out_reward")
class HeldOutReward:
    """The configured rewards of greedy replies to the first `eval.num_prompts` held-out prompts (`eval.prompts`,
    eval split), generated with up to `eval.max_new_tokens` tokens in mode `eval.thinking`."""

    def __init__(self, trainer: Trainer):
        from qwen3jax.data.verifiable import load_verifiable  # pylint: disable=import-outside-toplevel
        from qwen3jax.rewards import build_rewards  # pylint: disable=import-outside-toplevel

        c = trainer.config.eval
        if not c.get("prompts"):
            raise EvalError(f"eval.name={c.name} needs eval.prompts (embedded:<domain> or a query–verifier JSONL)")
        for key in ("num_prompts", "max_new_tokens"):
            if c.get(key, 0) < 1:
                raise EvalError(f"eval.name={c.name} needs eval.{key} >= 1, got {c.get(key)}")
        rewards = list(c.get("rewards") or trainer.config.get("rewards") or [])
        if not rewards:
            raise EvalError(f"eval.name={c.name} needs eval.rewards (or the run's rewards), e.g. [{{'name': 'math'}}]")
        self._trainer, self._thinking, self._max_new = trainer, bool(c.get("thinking", False)), c.max_new_tokens
        self._rewards = build_rewards(rewards, lend=trainer.lend_frozen)
        self._records = load_verifiable(c.prompts, "eval")[: c.num_prompts]
        tok = trainer.tokenizer
        self._stop_ids = (tok.token_to_id("<|im_end|>"), tok.eos_id)
        self._prompt_ids = [chat_prompt_ids(tok, r, self._thinking) for r in self._records]

    def __call__(self, state: TrainState) -> dict[str, float]:
        metrics, rows = self.score(state.model())
        _write_samples(self._trainer, state, rows)
        return metrics

    def score(self, model) -> tuple[dict[str, float], list[dict[str, Any]]]:
        """(metrics, one row per prompt: prompt, completion, reward) of `model`'s greedy replies."""
        from qwen3jax.data.verifiable import batch_fields  # pylint: disable=import-outside-toplevel
        from qwen3jax.sample import generate  # pylint: disable=import-outside-toplevel

        tok = self._trainer.tokenizer
        result = generate(model, self._prompt_ids, max_new_tokens=self._max_new, stop_ids=self._stop_ids,
                          vocab_limit=tok.vocab_size)  # fmt: skip
        completions = [reply_text(tok, ids, self._stop_ids, self._thinking) for ids in result.tokens]
        prompts, fields = batch_fields(self._records)
        scored, components = self._rewards.score(prompts, completions, **fields)
        judged = scored.mask
        if not judged.any():
            raise EvalError(f"none of the {len(judged)} held-out replies could be judged: {scored.masked_counts()}")
        scores = scored.scores[judged]
        metrics = {
            "eval/reward_mean": float(scores.mean()),
            "eval/accuracy": float(np.mean(scores >= 1.0)),
            "eval/masked_frac": float(1 - judged.mean()),
            "eval/completion_len_mean": float(np.mean(result.lengths)),
            # each reward's own mean (e.g. `eval/reward/format/mean` beside the accuracy of a weighted answer check)
            **{f"eval/{k}": v for k, v in components.items()
               if k.endswith("/mean") and not k.startswith("reward/total")},  # fmt: skip
        }
        rows = [{"prompt": p, "completion": c, "reward": float(score) if ok else None}
                for p, c, score, ok in zip(prompts, completions, scored.scores, judged)]  # fmt: skip
        return metrics, rows


@EVALS.register("thinking_switch")
class ThinkingSwitch:
    """Whether greedy replies follow the `/think` and `/no_think` soft switches: the first `eval.num_prompts`
    held-out prompts (`eval.prompts`), each once with ` /think` and once with ` /no_think` appended, rendered without
    `enable_thinking` (the model itself must open the think block). Reports the share of `/no_think` replies that
    open an empty think block and of `/think` replies that open a non-empty one (text after `<think>` other than
    `</think>`; the block need not close within `eval.max_new_tokens`)."""

    def __init__(self, trainer: Trainer):
        from qwen3jax.data.verifiable import load_verifiable  # pylint: disable=import-outside-toplevel

        c = trainer.config.eval
        if not c.get("prompts") or c.get("num_prompts", 0) < 1 or c.get("max_new_tokens", 0) < 1:
            raise EvalError(f"eval.name={c.name} needs eval.prompts, eval.num_prompts >= 1 and eval.max_new_tokens >= 1")
        self._trainer, self._max_new = trainer, c.max_new_tokens
        tok = trainer.tokenizer
        self._stop_ids = (tok.token_to_id("<|im_end|>"), tok.eos_id)
        records = load_verifiable(c.prompts, "eval")[: c.num_prompts]
        self._flags = [flag for _ in records for flag in ("/think", "/no_think")]
        self._prompt_ids = [
            chat_prompt_ids(tok, {"prompt": f"{r['prompt']} {flag}"}, True) for r in records for flag in ("/think", "/no_think")
        ]

    def __call__(self, state: TrainState) -> dict[str, float]:
        from qwen3jax.sample import generate  # pylint: disable=import-outside-toplevel

        tok = self._trainer.tokenizer
        result = generate(state.model(), self._prompt_ids, max_new_tokens=self._max_new, stop_ids=self._stop_ids,
                          vocab_limit=tok.vocab_size)  # fmt: skip
        followed = {"/think": [], "/no_think": []}
        texts = [tok.decode([t for t in ids if t not in self._stop_ids]) for ids in result.tokens]
        _write_samples(self._trainer, state, [{"flag": f, "completion": t} for f, t in zip(self._flags, texts)])
        for flag, text in zip(self._flags, texts):
            text = text.lstrip()
            inside = text[len("<think>") :].lstrip() if text.startswith("<think>") else None
            if inside is None or not inside:  # no think block opened, or nothing after it yet: follows neither
                followed[flag].append(False)
            else:  # judged by the opening, so a short max_new_tokens suffices
                followed[flag].append(inside.startswith("</think>") == (flag == "/no_think"))
        return {"eval/think_nonempty_frac": float(np.mean(followed["/think"])),
                "eval/no_think_empty_frac": float(np.mean(followed["/no_think"]))}  # fmt: skip


@EVALS.register("composite")
class Composite:
    """The evaluators named in `eval.parts` (e.g. `["held_out_loss", "held_out_reward"]`: an SFT phase that teaches
    answers is judged by its held-out loss and its answers), their metrics merged."""

    def __init__(self, trainer: Trainer):
        parts = list(trainer.config.eval.get("parts") or [])
        if not parts or "composite" in parts:
            raise EvalError(f"eval.name=composite needs eval.parts, a list of other evaluators; got {parts}")
        self._parts = [EVALS.get(name)(trainer) for name in parts]

    def __call__(self, state: TrainState) -> dict[str, float]:
        return {k: v for part in self._parts for k, v in part(state).items()}


def _generate(trainer: Trainer, state: TrainState, prompts: list[list[int]], stop_ids) -> list[list[int]]:
    from qwen3jax.sample import generate  # pylint: disable=import-outside-toplevel

    s = trainer.config.samples
    result = generate(state.model(), prompts, max_new_tokens=s.max_new_tokens, temperature=s.temperature,
                      top_p=s.top_p, top_k=s.top_k, presence_penalty=s.presence_penalty, seed=s.seed,
                      stop_ids=stop_ids, vocab_limit=trainer.tokenizer.vocab_size)  # fmt: skip
    return result.tokens


@SAMPLES.register("text")
class TextSamples:
    """Continuations of the configured raw-text prompts."""

    def __init__(self, trainer: Trainer):
        self._trainer = trainer

    def __call__(self, state: TrainState) -> str:
        tok = self._trainer.tokenizer
        prompts = list(self._trainer.config.samples.prompts)[: self._trainer.config.samples.num]
        outputs = _generate(self._trainer, state, [tok.encode(p) for p in prompts], (tok.eos_id,))
        return "\n".join(f"--- prompt: {p!r}\n{p}{tok.decode(ids)}\n" for p, ids in zip(prompts, outputs))


@SAMPLES.register("chat")
class ChatSamples:
    """Assistant replies to the configured prompts (one user message each) through the chat template, once
    with thinking and once without (the template's empty think block), stopping at `<|im_end|>`."""

    def __init__(self, trainer: Trainer):
        self._trainer = trainer

    def __call__(self, state: TrainState) -> str:
        tok = self._trainer.tokenizer
        prompts = list(self._trainer.config.samples.prompts)[: self._trainer.config.samples.num]
        cases = [(p, thinking) for p in prompts for thinking in (True, False)]
        stop = (tok.token_to_id("<|im_end|>"), tok.eos_id)
        prompt_ids = [chat_prompt_ids(tok, {"prompt": p}, thinking) for p, thinking in cases]
        outputs = _generate(self._trainer, state, prompt_ids, stop)
        return "\n".join(
            f"--- prompt ({'thinking' if thinking else 'non-thinking'}): {p!r}\n{tok.decode(prompt)}{tok.decode(ids)}\n"
            for (p, thinking), prompt, ids in zip(cases, prompt_ids, outputs)
        )

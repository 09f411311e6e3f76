"""`kl_heldout`: how far the student still is from its teacher, on fixed held-out prompts. At each evaluation the
student answers the first `eval.num_prompts` held-out prompts (`eval.prompts`, eval split, alternating the source's
modes) greedily with up to `eval.max_new_tokens` tokens, and the run's `distill` loss measures its divergence from
the frozen teacher on those completion tokens: `eval/kl_heldout` (per token), on the distribution the student
itself produces, which on-policy distillation trains.

`teacher_reward`: `held_out_reward` of the frozen teacher (same prompts, mode and rewards), computed at the first
evaluation only (the teacher does not change): `eval/teacher_accuracy` and `eval/teacher_reward_mean`, the level the
student's `eval/accuracy` is distilled towards."""

from __future__ import annotations

from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
from flax import nnx

from qwen3jax.data.verifiable import load_verifiable
from qwen3jax.distill.loss import TEACHER, DistillLoss
from qwen3jax.distill.source import MODES, completion_rows, mode_prompt_ids
from qwen3jax.train.evals import EVALS, EvalError, HeldOutReward

if TYPE_CHECKING:
    from qwen3jax.train.loop import Trainer
    from qwen3jax.train.step import TrainState


class HeldOutKl:
    """Mean per-token divergence of `loss` between a student and a teacher on the student's greedy completions of
    fixed prompts (one compiled scorer, reused at every evaluation)."""

    def __init__(self, loss: DistillLoss, tokenizer, prompt_ids, *, seq_len: int, max_new_tokens: int):
        self.loss, self.tokenizer, self.prompt_ids = loss, tokenizer, prompt_ids
        self.seq_len, self.max_new_tokens = seq_len, max_new_tokens
        self._scores = {}

    def _scorer(self, student_graph, teacher_graph):
        key = (student_graph, teacher_graph)
        if key not in self._scores:

            def score(student_params, teacher_params, rows):
                per_token, valid = self.loss.divergence(nnx.merge(student_graph, student_params),
                                                        nnx.merge(teacher_graph, teacher_params), rows)  # fmt: skip
                return jnp.sum(jnp.where(valid, per_token, 0.0)), jnp.sum(valid)

            self._scores[key] = jax.jit(score)
        return self._scores[key]

    def __call__(self, student: nnx.Module, teacher: nnx.Module) -> dict[str, float]:
        rows, _, _ = completion_rows(student, self.tokenizer, self.prompt_ids, seq_len=self.seq_len,
                                     max_new_tokens=self.max_new_tokens)  # fmt: skip
        (s_graph, s_params), (t_graph, t_params) = nnx.split(student, nnx.Param), nnx.split(teacher, nnx.Param)
        total, count = self._scorer(s_graph, t_graph)(s_params, t_params, {k: jnp.asarray(v) for k, v in rows.items()})
        if not int(count):
            raise EvalError("the held-out completions have no tokens to compare (check eval.max_new_tokens)")
        return {"eval/kl_heldout": float(total) / int(count), "eval/kl_heldout_tokens": float(count)}


@EVALS.register("kl_heldout")
class KlHeldOut:
    def __init__(self, trainer: Trainer):
        c = trainer.config.eval
        if not isinstance(trainer.loss_fn, DistillLoss):
            raise EvalError(f"eval.name=kl_heldout measures the run's distill loss; this run's loss is "
                            f"{trainer.config.loss.name!r}")  # fmt: skip
        if TEACHER not in trainer.frozen:
            raise EvalError(f"eval.name=kl_heldout needs the frozen model {TEACHER!r} (config.frozen)")
        if not c.get("prompts") or c.get("num_prompts", 0) < 1 or c.get("max_new_tokens", 0) < 1:
            raise EvalError("eval.name=kl_heldout needs eval.prompts, eval.num_prompts >= 1 and "
                            "eval.max_new_tokens >= 1")
        modes = list(trainer.config.batch_source.get("modes", list(MODES)))
        records = load_verifiable(c.prompts, "eval")[: c.num_prompts]
        self._teacher = trainer.frozen[TEACHER]
        prompt_ids = mode_prompt_ids(trainer.tokenizer, records, modes)
        self._measure = HeldOutKl(trainer.loss_fn, trainer.tokenizer, prompt_ids, seq_len=trainer.config.seq_len,
                                  max_new_tokens=c.max_new_tokens)

    def __call__(self, state: TrainState) -> dict[str, float]:
        return self._measure(state.model(), self._teacher.model())


@EVALS.register("teacher_reward")
class TeacherReward:
    def __init__(self, trainer: Trainer):
        if TEACHER not in trainer.frozen:
            raise EvalError(f"eval.name=teacher_reward needs the frozen model {TEACHER!r} (config.frozen)")
        self._held_out, self._teacher, self._metrics = HeldOutReward(trainer), trainer.frozen[TEACHER], None

    def __call__(self, state: TrainState) -> dict[str, float]:
        del state  # the teacher's replies do not depend on the student
        if self._metrics is None:
            metrics, _ = self._held_out.score(self._teacher.model())
            self._metrics = {f"eval/teacher_{k}": metrics[f"eval/{k}"] for k in ("accuracy", "reward_mean")}
        return dict(self._metrics)

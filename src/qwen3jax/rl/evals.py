"""RL evaluation: the configured rewards of greedy replies to held-out query–verifier prompts.

`held_out_reward` (EVALS) answers the first `eval.batches` × `global_batch / group_size` held-out prompts of the
rollout source (`batch_source.eval_prompts`) greedily, in the source's thinking mode, scores them with the run's
rewards and reports `eval/reward_mean` (over judged replies), `eval/accuracy` (the share of judged replies with
the full reward, >= 1: a verifier's pass), `eval/masked_frac` and `eval/completion_len_mean`. The first replies of each evaluation go to `eval_samples.jsonl` in the run directory
(step, prompt, completion, reward), so a reader sees what the numbers mean.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import numpy as np

from qwen3jax.data.verifiable import batch_fields
from qwen3jax.rl.source import load_prompts
from qwen3jax.sample import generate
from qwen3jax.train.evals import EVALS, EvalError

if TYPE_CHECKING:
    from qwen3jax.train.loop import Trainer
    from qwen3jax.train.step import TrainState

SHOWN = 4  # replies written to eval_samples.jsonl per evaluation


@EVALS.register("held_out_reward")
class HeldOutReward:
    def __init__(self, trainer: Trainer):
        source = trainer.source
        if not getattr(source, "eval_prompts", ""):
            raise EvalError("eval.name=held_out_reward needs batch_source.eval_prompts (embedded:<domain> or a JSONL)")
        self._trainer, self._source = trainer, source
        count = trainer.config.eval.batches * source.prompts_per_step
        self._records = load_prompts(source.eval_prompts, "eval")[:count]
        self._prompt_ids = [source.prompt_ids(r) for r in self._records]

    def __call__(self, state: TrainState) -> dict[str, float]:
        source = self._source
        result = generate(state.model(), self._prompt_ids, max_new_tokens=source.max_new_tokens,
                          stop_ids=source.stop_ids, vocab_limit=source.tokenizer.vocab_size)  # fmt: skip
        completions = [source.completion_text(ids) for ids in result.tokens]
        prompts, fields = batch_fields(self._records)
        scored, _ = source.rewards.score(prompts, completions, **fields)
        judged = scored.mask
        if not judged.any():
            raise EvalError(f"none of the {len(judged)} held-out replies could be judged: {scored.masked_counts()}")
        scores = scored.scores[judged]
        metrics = {
            "eval/reward_mean": float(scores.mean()),
            "eval/accuracy": float(np.mean(scores >= 1.0)),
            "eval/masked_frac": float(1 - judged.mean()),
            "eval/completion_len_mean": float(np.mean(result.lengths)),
        }
        if self._trainer.primary:
            step = int(state.step)
            with open(self._trainer.workdir / "eval_samples.jsonl", "a", encoding="utf-8") as f:
                for prompt, completion, score, ok in list(zip(prompts, completions, scored.scores, judged))[:SHOWN]:
                    row = {"step": step, "prompt": prompt, "completion": completion,
                           "reward": float(score) if ok else None}  # fmt: skip
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")
        return metrics

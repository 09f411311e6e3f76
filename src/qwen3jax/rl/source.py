"""The `rollouts` batch source: RL batches sampled from the current policy, in the run's process and on its mesh.

Every `updates_per_rollout` (μ) steps it takes `prompts_per_step` query–verifier records from its prompt stream,
samples `group_size` completions of each from `state`'s current weights with the generation engine (keeping each
token's sampling log-prob), scores them with the configured rewards, turns each group's rewards into advantages and
lays out one training row per completion (`rl/rows.py`). The next μ − 1 steps train on the same rows: their stored
log-probs make those updates off-policy-correct through the importance ratio.

Dynamic sampling drops groups without a learning signal (all judged rewards equal) and samples replacement prompts,
up to `max_refills` rounds; the batch keeps its size by filling the rest with the least bad groups (their advantage
is 0, so they only cost compute) and the metric `zero_std_groups_frac` says how many. Completions cut at the length
limit can be dropped from the loss (`overlong="filter"`) or penalised (`overlong="soft"`, DAPO).

With `tools` (registered tool names, `rl/tools.py`) and `max_turns` > 1 a completion is a multi-turn rollout
(`rl/multiturn.py`): the prompt lists the tools' schemas, the tool calls of each turn are run and their responses
appended through the chat template before the next turn is sampled; only the policy's own tokens are trained, and
the rewards score the last turn's reply (the whole conversation is the per-completion field `conversation`).

State (checkpointed with the train state): the prompt stream's position, the rollout counter (which seeds the
sampler) and, in the middle of a μ cycle, the stored rows, so a resumed run trains on exactly the batch it would
have trained on and samples exactly the completions it would have sampled.
"""

from __future__ import annotations

import collections
import dataclasses
import time
import zlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import grain
import jax
import numpy as np

from qwen3jax.data.verifiable import batch_fields, load_verifiable
from qwen3jax.rewards import RewardResult, WeightedRewards, build_rewards
from qwen3jax.rl.advantages import group_advantages, overlong_penalty
from qwen3jax.rl.multiturn import Episode, multiturn_rollout
from qwen3jax.rl.rows import rollout_rows
from qwen3jax.rl.tools import ToolEnvironment
from qwen3jax.sample import generate
from qwen3jax.sample.budget import ThinkingTokens, configured_budget
from qwen3jax.train.batch_sources import SOURCES
from qwen3jax.train.evals import chat_prompt_ids, reply_text

if TYPE_CHECKING:
    from qwen3jax.train.loop import Trainer
    from qwen3jax.train.step import TrainState

OVERLONG = ("none", "filter", "soft")


class PromptStream:
    """An endless stream of records on grain: a fresh seeded shuffle every epoch (`MapDataset.shuffle().repeat()`
    reseeds each epoch), read by position, so its whole state is that position (kept as (epoch, index))."""

    def __init__(self, records: list[dict[str, Any]], seed: int | str):
        if not records:
            raise ValueError("the rollout prompt set is empty")
        self.records = records
        # grain seeds are integers; string seeds (one stream per mixture task) map to one deterministically.
        int_seed = seed if isinstance(seed, int) else zlib.crc32(str(seed).encode())
        self._dataset = grain.MapDataset.source(records).shuffle(seed=int_seed).repeat()
        self._position = 0

    def take(self, n: int) -> list[dict[str, Any]]:
        out = [self._dataset[i] for i in range(self._position, self._position + n)]
        self._position += n
        return out

    def get_state(self) -> dict[str, int]:
        epoch, index = divmod(self._position, len(self.records))
        return {"epoch": epoch, "index": index}

    def set_state(self, state: dict[str, int]) -> None:
        self._position = int(state["epoch"]) * len(self.records) + int(state["index"])


@dataclasses.dataclass
class _Group:
    record: dict[str, Any]
    prompt_ids: list[int]
    completions: list[list[int]]
    logprobs: list[np.ndarray]
    forced: list[np.ndarray]
    truncated: list[bool]
    texts: list[str]
    lengths: list[int]  # tokens of the completion's model turns
    episodes: list[Episode] | None = None  # multi-turn rollouts only
    total: RewardResult | None = None  # the weighted reward of each completion, once judged
    parts: dict[str, RewardResult] = dataclasses.field(default_factory=dict)  # each reward's own results


@SOURCES.register("rollouts")
class RolloutSource:
    def __init__(
        self,
        trainer: Trainer,
        *,
        prompts: str,
        group_size: int = 8,
        max_new_tokens: int = 128,
        temperature: float = 1.0,
        top_p: float = 1.0,
        top_k: int = 0,
        thinking: bool = True,
        advantage_scale: str = "std",
        updates_per_rollout: int = 1,
        dynamic_sampling: bool = False,
        max_refills: int = 2,
        overlong: str = "none",
        overlong_cache: int = 32,
        tools: Sequence[str] = (),
        max_turns: int = 1,
        thinking_budget: int = -1,
    ):
        c = trainer.config
        if c.global_batch % group_size:
            raise ValueError(f"global_batch={c.global_batch} must be a multiple of batch_source.group_size={group_size}")
        if overlong not in OVERLONG:
            raise ValueError(f"batch_source.overlong must be one of {OVERLONG}, got {overlong!r}")
        if updates_per_rollout < 1 or max_new_tokens < 1:
            raise ValueError("batch_source.updates_per_rollout and max_new_tokens must be >= 1")
        if bool(tools) != (max_turns > 1) or max_turns < 1:
            raise ValueError(f"batch_source.tools={list(tools)} needs max_turns >= 2 and max_turns={max_turns} needs "
                             "tools (a single turn never sees a tool response)")  # fmt: skip
        if tools and overlong == "soft":
            raise ValueError("batch_source.overlong='soft' penalises one completion's length; with tools use 'filter'")
        self._trainer = trainer
        self._layout = trainer.layout
        self.tokenizer = trainer.tokenizer
        self._think = ThinkingTokens.from_tokenizer(self.tokenizer)
        self.stop_ids = tuple(self.tokenizer.token_to_id(t) for t in ("<|im_end|>", "<|endoftext|>"))
        self.prompts_per_step = c.global_batch // group_size
        self.group_size, self.max_new_tokens, self.thinking = group_size, max_new_tokens, thinking
        self._decoding = dict(temperature=temperature, top_p=top_p if top_p < 1 else None, top_k=top_k or None)
        self._scale, self._mu = advantage_scale, updates_per_rollout
        self._dynamic, self._max_refills = dynamic_sampling, max_refills
        self._overlong, self._overlong_cache = overlong, overlong_cache
        self._tools = ToolEnvironment(tools) if tools else None
        self._max_turns = max_turns
        # SPEC §4's budget: a completion whose thinking reaches it gets the stop-thinking text forced in (untrained)
        self._budget = configured_budget(thinking_budget)
        self.rewards = self._build_rewards()
        self._stream = self._prompt_stream(prompts)
        self._seed = c.seed
        self._rollouts = 0  # rollout batches sampled so far (seeds the sampler)
        self._pending: dict[str, np.ndarray] | None = None  # rows still to train on in this μ cycle
        self._uses_left = 0
        self._metrics: dict[str, float] = {}
        self._report = {"rollouts": 0, "masked": {}, "refilled_groups": 0, **({"tool_errors": {}} if tools else {})}

    # ---- the batch source protocol --------------------------------------------------------------------------------
    def next(self, state: TrainState) -> dict[str, jax.Array]:
        if self._uses_left == 0:
            self._pending = self._rollout(state)
            self._uses_left = self._mu
        self._uses_left -= 1
        return self._layout.to_global(self._local_rows(self._pending))

    def metrics(self) -> dict[str, float]:
        """Rollout metrics of the latest rollout batch (names under the loop's `train/` prefix)."""
        return dict(self._metrics)

    def get_state(self) -> dict[str, Any]:
        state = {"stream": self._stream.get_state(), "rollouts": self._rollouts, "uses_left": self._uses_left}
        if self._uses_left:  # mid-cycle: the stored rows and their rollout's metrics (floats survive JSON exactly)
            state["pending"] = {k: v.tolist() for k, v in self._pending.items()}
            state["metrics"] = self._metrics
        return state

    def set_state(self, state: dict[str, Any]) -> None:
        self._stream.set_state(state["stream"])
        self._rollouts, self._uses_left = int(state["rollouts"]), int(state["uses_left"])
        if self._uses_left:
            dtypes = {name: field.dtype for name, field in self._layout.spec.items()}
            self._pending = {k: np.asarray(v, dtypes[k]) for k, v in state["pending"].items()}
            self._metrics = dict(state["metrics"])

    def report(self) -> dict[str, Any]:
        return dict(self._report)

    # ---- what a task mixture (`rl/mixture.py`) replaces -------------------------------------------------------------
    def _build_rewards(self) -> WeightedRewards:
        return build_rewards(list(self._trainer.config.rewards), lend=self._trainer.lend_frozen)

    def _prompt_stream(self, prompts: str) -> PromptStream:
        return PromptStream(load_verifiable(prompts, "train"), seed=self._trainer.config.seed)

    def _judge(self, groups: list[_Group]) -> None:
        """Sets every group's rewards: here the run's rewards score every completion."""
        judge_groups(self.rewards, groups, self.group_size)

    def _batch_metrics(self, groups: list[_Group]) -> dict[str, float]:
        """Metrics of the trained batch beyond the rewards' (a mixture's per-task means)."""
        del groups
        return {}

    # ---- sampling ---------------------------------------------------------------------------------------------------
    def _local_rows(self, rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """This process's contiguous share of the global rows."""
        share = len(rows["advantages"]) // jax.process_count()
        start = jax.process_index() * share
        return {k: v[start : start + share] for k, v in rows.items()}

    def prompt_ids(self, record: dict[str, Any]) -> list[int]:
        schemas = self._tools.schemas if self._tools else None
        return chat_prompt_ids(self.tokenizer, record, self.thinking, tools=schemas)

    def completion_text(self, ids) -> str:
        return reply_text(self.tokenizer, ids, self.stop_ids, self.thinking)

    @property
    def records(self) -> list[dict[str, Any]]:
        """Every rollout prompt record (the source's train split), in file order."""
        return self._stream.records

    def sample_and_score(self, model, records: list[dict[str, Any]], round_: int = 0):
        """(rewards [G, N], judged [G, N]) of `group_size` completions of each record sampled from `model` as a
        rollout samples them (the `select` command's pass rates)."""
        return self._score(self._sample(model, records, round_))

    def _generate(self, model, prompt_ids: list[list[int]], n: int, round_: int, turn: int = 0, stream: int = 0):
        """`stream` > 0: a sampling stream of its own for another part of the same rollout (a mixture's tool task)."""
        seed = (self._seed * 1_000_003 + self._rollouts * 101 + round_) % 2**31
        if turn or stream:  # later turns of multi-turn rollouts, other parts of the rollout: streams of their own
            seed = int(np.random.SeedSequence([seed, turn] + ([stream] if stream else [])).generate_state(1)[0]) % 2**31
        return generate(
            model, prompt_ids, n=n, max_new_tokens=self.max_new_tokens, stop_ids=self.stop_ids,
            vocab_limit=self.tokenizer.vocab_size, seed=seed, thinking=self._think, thinking_budget=self._budget,
            **self._decoding,
        )  # fmt: skip

    def _sample(self, model, records: list[dict[str, Any]], round_: int) -> list[_Group]:
        prompt_ids = [self.prompt_ids(r) for r in records]
        if self._tools is not None:
            return self._sample_episodes(model, records, prompt_ids, round_, self._tools, self._max_turns)
        result = self._generate(model, prompt_ids, self.group_size, round_)
        groups = []
        g = self.group_size
        for i, (record, ids) in enumerate(zip(records, prompt_ids)):
            rows = range(i * g, (i + 1) * g)
            completions = [result.tokens[r] for r in rows]
            texts = [self.completion_text(c) for c in completions]
            groups.append(_Group(record, ids, completions, [result.logprobs[r] for r in rows],
                                 [result.forced[r] for r in rows], [result.finish_reason[r] == "length" for r in rows],
                                 texts, [len(c) for c in completions]))  # fmt: skip
        return groups

    def _sample_episodes(self, model, records, prompt_ids, round_: int, tools: ToolEnvironment, max_turns: int,
                         stream: int = 0) -> list[_Group]:  # fmt: skip
        episodes = multiturn_rollout(
            lambda prompts, n, turn: self._generate(model, prompts, n, round_, turn, stream), prompt_ids,
            n=self.group_size, tools=tools, tokenizer=self.tokenizer, reply_text=self.completion_text, max_turns=max_turns,
            max_new_tokens=self.max_new_tokens, max_len=self._trainer.config.seq_len, enable_thinking=self.thinking,
        )  # fmt: skip
        g = self.group_size
        groups = []
        for i, (record, ids) in enumerate(zip(records, prompt_ids)):
            mine = episodes[i * g : (i + 1) * g]
            groups.append(_Group(record, ids, [e.tokens[len(ids) :] for e in mine],
                                 [np.asarray(e.logprobs[len(ids) :], np.float32) for e in mine],
                                 [~np.asarray(e.sampled[len(ids) :]) for e in mine], [e.truncated for e in mine],
                                 [e.final_answer for e in mine], [e.turn_tokens for e in mine], mine))  # fmt: skip
        return groups

    def _score(self, groups: list[_Group]) -> tuple[np.ndarray, np.ndarray]:
        """(rewards [G, N] with the overlong shaping, judged [G, N]) of judged groups."""
        self._judge(groups)
        rewards = np.stack([grp.total.scores for grp in groups])
        judged = np.stack([grp.total.mask for grp in groups])
        truncated = np.array([grp.truncated for grp in groups])
        if self._overlong == "soft":
            lengths = np.array([grp.lengths for grp in groups])
            rewards = rewards + overlong_penalty(lengths, max_tokens=self.max_new_tokens,
                                                 cache_tokens=min(self._overlong_cache, self.max_new_tokens))  # fmt: skip
        if self._overlong == "filter":
            judged &= ~truncated
        return rewards, judged

    def _rollout(self, state: TrainState) -> dict[str, np.ndarray]:
        start = time.perf_counter()
        policy = state.model()
        groups = self._sample(policy, self._stream.take(self.prompts_per_step), 0)
        rewards, judged = self._score(groups)
        advantages = group_advantages(rewards, judged, scale=self._scale)
        refills = 0
        while self._dynamic and advantages.zero_std.any() and refills < self._max_refills:
            refills += 1
            extra = self._sample(policy, self._stream.take(int(advantages.zero_std.sum())), refills)
            x_rewards, x_judged = self._score(extra)
            x_adv = group_advantages(x_rewards, x_judged, scale=self._scale)
            # Replace signal-less groups by new groups that have a signal, in order.
            useful = [j for j in range(len(extra)) if not x_adv.zero_std[j]]
            for slot, j in zip(np.flatnonzero(advantages.zero_std), useful):
                groups[slot], rewards[slot], judged[slot] = extra[j], x_rewards[j], x_judged[j]
            advantages = group_advantages(rewards, judged, scale=self._scale)
            self._report["refilled_groups"] += len(useful)
        self._rollouts += 1
        seconds = time.perf_counter() - start
        g = self.group_size
        rows = rollout_rows(
            [grp.prompt_ids for grp in groups for _ in range(g)],
            [c for grp in groups for c in grp.completions],
            [lp for grp in groups for lp in grp.logprobs],
            [f for grp in groups for f in grp.forced],
            advantages.advantages.reshape(-1), advantages.trained.reshape(-1),
            seq_len=self._trainer.config.seq_len,
        )  # fmt: skip
        lengths = np.array([n for grp in groups for n in grp.lengths])
        flat_rewards = rewards.reshape(-1)[judged.reshape(-1)]
        totals = RewardResult.concat([grp.total for grp in groups])
        self._metrics = {
            **component_metrics(groups),
            **self._batch_metrics(groups),
            "reward_mean": float(flat_rewards.mean()) if flat_rewards.size else float("nan"),
            "reward_std": float(flat_rewards.std()) if flat_rewards.size else float("nan"),
            "masked_frac": float(1 - judged.mean()),
            "zero_std_groups_frac": float(advantages.zero_std.mean()),
            "completion_len_mean": float(lengths.mean()),
            "truncated_frac": float(np.mean([t for grp in groups for t in grp.truncated])),
            "rollout_tokens_per_s": float(lengths.sum() / seconds),
            "refill_rounds": float(refills),
            **self._tool_metrics([grp for grp in groups if grp.episodes is not None]),
        }
        for reason, n in totals.masked_counts().items():
            self._report["masked"][reason] = self._report["masked"].get(reason, 0) + n
        self._report["rollouts"] = self._rollouts
        return rows

    def _tool_metrics(self, groups: list[_Group]) -> dict[str, float]:
        """Tool use of the trained batch's multi-turn `groups`: calls made and failed (in all, and by kind) and model
        turns ({} without such groups)."""
        episodes = [e for grp in groups for e in grp.episodes]
        if not episodes:
            return {}
        errors = sum((e.tool_errors for e in episodes), collections.Counter())
        report = self._report.setdefault("tool_errors", {})
        for kind, n in errors.items():
            report[kind] = report.get(kind, 0) + n
        return {
            "tool/calls": float(sum(e.tool_calls for e in episodes)),
            "tool/errors": float(sum(errors.values())),
            **{f"tool/errors/{kind}": float(n) for kind, n in sorted(errors.items())},
            "tool/turn_limit_frac": float(np.mean([e.turn_limit for e in episodes])),
            "turns_mean": float(np.mean([e.turns for e in episodes])),
        }

def judge_groups(rewards: WeightedRewards, groups: list[_Group], group_size: int) -> None:
    """Scores every completion of `groups` with `rewards` in one batch and stores each group's results."""
    records = [grp.record for grp in groups for _ in range(group_size)]
    prompts, fields = batch_fields(records)
    if groups[0].episodes is not None:  # multi-turn: the whole conversation too
        fields["conversation"] = [e.messages for grp in groups for e in grp.episodes]
    total, parts = rewards.score_parts(prompts, [t for grp in groups for t in grp.texts], **fields)
    for i, grp in enumerate(groups):
        rows = slice(i * group_size, (i + 1) * group_size)
        grp.total, grp.parts = total.select(rows), {name: part.select(rows) for name, part in parts.items()}


def component_metrics(groups: list[_Group]) -> dict[str, float]:
    """`reward/<name>` (a reward's mean over the completions it judged), `reward/<name>/judged` and
    `reward/<name>/masked/<reason>` over the completions of `groups` that the reward scored (the trained batch, so
    they agree with `reward_mean` after refills)."""
    names = list(dict.fromkeys(name for grp in groups for name in grp.parts))
    metrics = {}
    for name in names:
        part = RewardResult.concat([grp.parts[name] for grp in groups if name in grp.parts])
        metrics.update({k.removesuffix("/mean"): v for k, v in part.metrics(f"reward/{name}").items()})
    return metrics

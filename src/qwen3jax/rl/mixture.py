"""General RL's task mixture (TR §4.4, SPEC §6): rollout prompts drawn from several tasks ("slots"), each with its
own prompt source, rewards and thinking mode, as the `task_mixture` batch source.

A slot (`batch_source.tasks.<name>`):
  prompts      `embedded:<domain>` or a query–verifier JSONL (`data/verifiable.py`); `eval_prompts` for the held-out
               evaluation (default: the same spec's eval split; a JSONL file has no split, so give one);
  rewards      `[{"name", "weight", "label", **options}, ...]` as an experiment's `rewards` list; a reward configured
               alike in several slots is built once (one judge, one reward model) and logged under one label;
  mode         "think" / "no_think": the `/think` or `/no_think` soft switch is appended to the last user turn,
               "mixed": one of them drawn per prompt, "given": the prompt's own switches (e.g. ThinkFollow
               conversations). Prompts are rendered with the template's default (thinking enabled, no forced empty
               think block), so the model itself must follow the switch, and the `format` reward reads it back;
  share        the slot's expected share of the batch's prompts (shares are normalised);
  tools, max_turns
               registered tools (`rl/tools.py`) and the turn limit (>= 2) of the slot's multi-turn rollouts
               (`rl/multiturn.py`): its prompts list the tools' schemas and its groups are sampled as episodes, in a
               sampling stream of their own; the other slots' groups stay single-turn.

Each prompt of a rollout batch draws its slot (and, in "mixed" mode, its switch) from a generator seeded by the
run's seed and the draw's index, then takes the slot's next record from that slot's own `PromptStream`; the
checkpointed state is the draw count and every slot's stream position, so a resumed run draws the same tasks and
prompts. A group (the samples of one prompt) belongs to one slot and is scored by that slot's rewards only.

Metrics beside the rollout's (`train/` prefix): `task/<slot>/reward_mean` (the slot's weighted reward over its judged
completions), `task/<slot>/reward/<label>` (each of its rewards' own mean) and `task/<slot>/groups_frac` (its share
of the trained groups); `reward/<label>` is a reward's mean over the completions of the slots that use it. The `held_out_mixture` evaluation scores greedy replies to each
slot's held-out prompts with the slot's rewards.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import random
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from qwen3jax.data.verifiable import load_verifiable
from qwen3jax.rewards import RewardResult, WeightedRewards, build_reward
from qwen3jax.rl.source import PromptStream, RolloutSource, _Group, judge_groups
from qwen3jax.rl.tools import ToolEnvironment
from qwen3jax.train.batch_sources import SOURCES
from qwen3jax.train.evals import EVALS, EvalError, _write_samples, chat_prompt_ids

if TYPE_CHECKING:
    from qwen3jax.train.loop import Trainer
    from qwen3jax.train.step import TrainState

MODES = ("think", "no_think", "mixed", "given")
SWITCHES = ("/think", "/no_think")


@dataclasses.dataclass(frozen=True)
class Slot:
    name: str
    prompts: str
    rewards: tuple[Mapping[str, Any], ...]
    mode: str
    share: float
    eval_prompts: str = ""
    tools: tuple[str, ...] = ()
    max_turns: int = 1

    @classmethod
    def from_config(cls, name: str, spec: Mapping[str, Any]) -> Slot:
        spec = dict(spec.to_dict() if hasattr(spec, "to_dict") else spec)
        missing = {"prompts", "rewards", "mode", "share"} - set(spec)
        unknown = set(spec) - {f.name for f in dataclasses.fields(cls)}
        if missing or unknown:
            raise ValueError(f"task {name!r}: missing {sorted(missing)}, unknown {sorted(unknown)} (a task has prompts, "
                             f"rewards, mode, share, and optionally eval_prompts, tools, max_turns)")  # fmt: skip
        slot = cls(name=name, **{**spec, "rewards": tuple(spec["rewards"]), "tools": tuple(spec.get("tools", ()))})
        if slot.mode not in MODES:
            raise ValueError(f"task {name!r}: mode must be one of {MODES}, got {slot.mode!r}")
        if not slot.share > 0 or not slot.rewards:
            raise ValueError(f"task {name!r}: needs share > 0 and at least one reward")
        if bool(slot.tools) != (slot.max_turns > 1) or slot.max_turns < 1:
            raise ValueError(f"task {name!r}: tools={list(slot.tools)} need max_turns >= 2 and max_turns={slot.max_turns} "
                             f"needs tools (a single turn never sees a tool response)")  # fmt: skip
        return slot

    def prepare(self, record: Mapping[str, Any], switch: str | None) -> dict[str, Any]:
        """The record as this slot rolls it out: as a chat whose last user turn carries `switch` (None: as given),
        tagged with the slot's name and tools."""
        out = copy.deepcopy(dict(record))
        messages = out.pop("messages", None) or [{"role": "user", "content": out.pop("prompt")}]
        if switch is not None:
            last = max(i for i, m in enumerate(messages) if m["role"] == "user")
            messages[last] = {**messages[last], "content": f"{messages[last]['content']} {switch}"}
        out.update(messages=messages, task=self.name)
        return out

    def fixed_switch(self, index: int) -> str | None:
        """The switch of the slot's `index`-th held-out prompt: its mode's, alternating in "mixed" mode."""
        return {"think": "/think", "no_think": "/no_think", "mixed": SWITCHES[index % 2], "given": None}[self.mode]


def parse_tasks(tasks: Mapping[str, Any]) -> list[Slot]:
    if not tasks:
        raise ValueError("batch_source.tasks is empty: a task mixture needs at least one task")
    return [Slot.from_config(name, spec) for name, spec in tasks.items()]


def build_task_rewards(slots: Sequence[Slot], lend=None) -> dict[str, WeightedRewards]:
    """Each slot's weighted rewards; a reward configured alike (all options but the weight) in several slots is one
    instance, and one label names one configuration."""
    built: dict[str, tuple[str, Any]] = {}  # label -> (its configuration, the reward)
    out = {}
    for slot in slots:
        names, rewards, weights = [], [], []
        for spec in slot.rewards:
            spec = dict(spec)
            weight = float(spec.pop("weight", 1.0))
            label = spec.get("label", spec.get("name"))
            key = json.dumps(spec, sort_keys=True, default=str)
            if label not in built:
                built[label] = (key, build_reward(spec, lend)[2])
            elif built[label][0] != key:
                raise ValueError(f"reward label {label!r} names two configurations ({built[label][0]} and {key}); "
                                 f"give one of them another 'label'")  # fmt: skip
            names.append(label), rewards.append(built[label][1]), weights.append(weight)
        if len(set(names)) != len(names):
            raise ValueError(f"task {slot.name!r} lists the reward label(s) {names} more than once")
        out[slot.name] = WeightedRewards(tuple(names), tuple(rewards), tuple(weights))
    return out


class TaskMixture:
    """The prompt stream of a mixture: per prompt a seeded draw of its slot (and switch), then the slot's next
    record. State: the draw count and every slot's stream position."""

    def __init__(self, slots: Sequence[Slot], records: Mapping[str, list[dict[str, Any]]], seed: int):
        self.slots = {slot.name: slot for slot in slots}
        self._streams = {name: PromptStream(records[name], seed=f"{seed}:{name}") for name in self.slots}
        shares = np.array([slot.share for slot in slots], np.float64)
        self._cumulative = np.cumsum(shares / shares.sum())
        self._seed, self.draws = seed, 0

    def draw(self, index: int) -> tuple[Slot, str | None]:
        """The slot and switch of draw `index` (a pure function of the seed and the index)."""
        rng = random.Random(f"{self._seed}:task:{index}")
        k = int(np.searchsorted(self._cumulative, rng.random(), side="right"))
        slot = list(self.slots.values())[min(k, len(self.slots) - 1)]
        return slot, (rng.choice(SWITCHES) if slot.mode == "mixed" else slot.fixed_switch(0))

    def take(self, n: int) -> list[dict[str, Any]]:
        out = []
        for _ in range(n):
            slot, switch = self.draw(self.draws)
            self.draws += 1
            out.append(slot.prepare(self._streams[slot.name].take(1)[0], switch))
        return out

    @property
    def records(self) -> list[dict[str, Any]]:
        """Every slot's training records as the slot rolls them out (held-out switches), slot after slot."""
        return [slot.prepare(r, slot.fixed_switch(i)) for name, slot in self.slots.items()
                for i, r in enumerate(self._streams[name].records)]  # fmt: skip

    def get_state(self) -> dict[str, Any]:
        return {"draws": self.draws, "streams": {name: s.get_state() for name, s in self._streams.items()}}

    def set_state(self, state: dict[str, Any]) -> None:
        if set(state["streams"]) != set(self._streams):
            raise ValueError(f"the checkpoint's tasks {sorted(state['streams'])} are not the config's "
                             f"{sorted(self._streams)}")  # fmt: skip
        self.draws = int(state["draws"])
        for name, stream_state in state["streams"].items():
            self._streams[name].set_state(stream_state)


def _judged_mean(result: RewardResult) -> float:
    return float(result.scores[result.mask].mean()) if result.mask.any() else float("nan")


def task_metrics(groups: Sequence[_Group]) -> dict[str, float]:
    """Per slot of `groups`: `task/<slot>/reward_mean` (its weighted reward over its judged completions),
    `task/<slot>/reward/<label>` (each of its rewards' own mean) and `task/<slot>/groups_frac`."""
    metrics = {}
    for name in dict.fromkeys(grp.record["task"] for grp in groups):
        mine = [grp for grp in groups if grp.record["task"] == name]
        metrics[f"task/{name}/reward_mean"] = _judged_mean(RewardResult.concat([grp.total for grp in mine]))
        for label in mine[0].parts:
            part = RewardResult.concat([grp.parts[label] for grp in mine])
            metrics[f"task/{name}/reward/{label}"] = _judged_mean(part)
        metrics[f"task/{name}/groups_frac"] = len(mine) / len(groups)
    return metrics


@SOURCES.register("task_mixture")
class MixtureSource(RolloutSource):
    """Rollouts of a task mixture (`batch_source.tasks`); every other option is the `rollouts` source's. Prompts
    are rendered with thinking enabled: the switches decide the mode."""

    def __init__(self, trainer: Trainer, *, tasks: Mapping[str, Any], **options):
        if "prompts" in options or "thinking" in options:
            raise ValueError("a task mixture takes its prompts and modes from batch_source.tasks, not from "
                             "batch_source.prompts / thinking")  # fmt: skip
        self.slots = parse_tasks(tasks.to_dict() if hasattr(tasks, "to_dict") else tasks)
        if options.get("overlong") == "soft" and any(slot.tools for slot in self.slots):
            raise ValueError("batch_source.overlong='soft' penalises one completion's length; with tool tasks use "
                             "'filter'")  # fmt: skip
        self._environments = {slot.name: ToolEnvironment(slot.tools) for slot in self.slots if slot.tools}
        self._max_turns_of = {slot.name: slot.max_turns for slot in self.slots}
        super().__init__(trainer, prompts="", thinking=True, **options)

    def _build_rewards(self) -> dict[str, WeightedRewards]:  # type: ignore[override]
        return build_task_rewards(self.slots, self._trainer.lend_frozen)

    def _prompt_stream(self, prompts: str) -> TaskMixture:  # type: ignore[override]
        del prompts
        records = {slot.name: load_verifiable(slot.prompts, "train") for slot in self.slots}
        return TaskMixture(self.slots, records, seed=self._trainer.config.seed)

    def prompt_ids(self, record: dict[str, Any]) -> list[int]:
        tools = self._environments.get(record["task"])
        return chat_prompt_ids(self.tokenizer, record, self.thinking, tools=tools.schemas if tools else None)

    def _sample(self, model, records: list[dict[str, Any]], round_: int) -> list[_Group]:
        """The single-turn tasks' groups in one batch, each tool task's as multi-turn episodes in a stream of its own."""
        groups: list[_Group | None] = [None] * len(records)
        parts = [[i for i, r in enumerate(records) if r["task"] not in self._environments]]
        parts += [[i for i, r in enumerate(records) if r["task"] == name] for name in self._environments]
        for stream, rows in enumerate(parts):
            if not rows:
                continue
            mine = [records[i] for i in rows]
            if stream == 0:
                sampled = super()._sample(model, mine, round_)
            else:
                task = mine[0]["task"]
                sampled = self._sample_episodes(model, mine, [self.prompt_ids(r) for r in mine], round_,
                                                self._environments[task], self._max_turns_of[task], stream=stream)  # fmt: skip
            for i, grp in zip(rows, sampled):
                groups[i] = grp
        return groups  # type: ignore[return-value]

    def _judge(self, groups: list[_Group]) -> None:
        for name, rewards in self.rewards.items():
            mine = [grp for grp in groups if grp.record["task"] == name]
            if mine:
                judge_groups(rewards, mine, self.group_size)

    def _batch_metrics(self, groups: list[_Group]) -> dict[str, float]:
        return task_metrics(groups)


@EVALS.register("held_out_mixture")
class HeldOutMixture:
    """Greedy replies to the first `eval.num_prompts` held-out prompts of every task of the run's `task_mixture`
    (its `eval_prompts`, eval split; switches fixed per prompt: alternating in "mixed" mode), up to
    `eval.max_new_tokens` tokens, scored by the task's rewards: `eval/<task>/reward_mean`, `eval/<task>/reward/<label>`
    and `eval/reward_mean` over all judged replies. Tasks with tools are skipped (their rollouts are multi-turn)."""

    def __init__(self, trainer: Trainer):
        c = trainer.config.eval
        if not isinstance(trainer.source, MixtureSource):
            raise EvalError(f"eval.name={c.name} needs batch_source.name='task_mixture'")
        if c.get("num_prompts", 0) < 1 or c.get("max_new_tokens", 0) < 1:
            raise EvalError(f"eval.name={c.name} needs eval.num_prompts >= 1 and eval.max_new_tokens >= 1")
        self._trainer, self._source, self._max_new = trainer, trainer.source, c.max_new_tokens
        self._records = [
            slot.prepare(record, slot.fixed_switch(i))
            for slot in self._source.slots if not slot.tools
            for i, record in enumerate(load_verifiable(slot.eval_prompts or slot.prompts, "eval")[: c.num_prompts])
        ]  # fmt: skip

    def __call__(self, state: TrainState) -> dict[str, float]:
        metrics, rows = self.score(state.model())
        _write_samples(self._trainer, state, rows)
        return metrics

    def score(self, model) -> tuple[dict[str, float], list[dict[str, Any]]]:
        from qwen3jax.sample import generate  # pylint: disable=import-outside-toplevel

        source = self._source
        result = generate(model, [source.prompt_ids(r) for r in self._records], max_new_tokens=self._max_new,
                          stop_ids=source.stop_ids, vocab_limit=source.tokenizer.vocab_size)  # fmt: skip
        groups = [_Group(r, [], [ids], [], [], [], [source.completion_text(ids)], [len(ids)])
                  for r, ids in zip(self._records, result.tokens)]  # fmt: skip
        for name, rewards in source.rewards.items():
            mine = [grp for grp in groups if grp.record["task"] == name]
            if mine:
                judge_groups(rewards, mine, 1)
        totals = RewardResult.concat([grp.total for grp in groups])
        if not totals.mask.any():
            raise EvalError(f"none of the {len(totals)} held-out replies could be judged: {totals.masked_counts()}")
        metrics = {f"eval/{k.removeprefix('task/')}": v for k, v in task_metrics(groups).items()
                   if not k.endswith("/groups_frac")}  # fmt: skip
        metrics["eval/reward_mean"] = _judged_mean(totals)
        rows = [{"task": g.record["task"], "prompt": g.record["messages"], "completion": g.texts[0],
                 "reward": float(g.total.scores[0]) if g.total.mask[0] else None} for g in groups]  # fmt: skip
        return metrics, rows

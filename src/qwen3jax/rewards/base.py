"""The reward interface: a registry of reward factories, per-completion results with a could-not-judge mask, and
the weighted combination an experiment configures.

A reward is built by name from the experiment config (`{"name": "math", "weight": 1.0, **options}`) and scores a
batch: `reward(prompts, completions, **fields) -> RewardResult`. `fields` are per-completion columns of the
query–verifier records (`gold`, `tests`, `constraints`, `choices`, ...), each a sequence as long as `completions`.
A completion that could not be judged (verifier crash, time-out, unparsable gold or judge output, no sandbox) is
masked with a reason: the RL update excludes it and the metrics count it, it is never scored as a silent 0.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from qwen3jax.registry import Registry

if TYPE_CHECKING:
    from qwen3jax.train.step import FrozenModel


@dataclasses.dataclass(frozen=True)
class RewardResult:
    """Scores of one batch of completions.

    scores: float32 [N]; the value of a masked completion is 0 and means nothing.
    mask: bool [N]; True where the completion was judged.
    reasons: per completion, None when judged, else why it could not be (a short snake_case tag).
    """

    scores: np.ndarray
    mask: np.ndarray
    reasons: tuple[str | None, ...]

    def __post_init__(self):
        n = len(self.reasons)
        if self.scores.shape != (n,) or self.mask.shape != (n,):
            raise ValueError(f"scores {self.scores.shape}, mask {self.mask.shape} and {n} reasons disagree")
        if any((r is None) != bool(m) for r, m in zip(self.reasons, self.mask)):
            raise ValueError("a completion is masked exactly when it has a reason")

    @classmethod
    def from_judgements(cls, judgements: Sequence[float | str]) -> RewardResult:
        """From one value per completion: a float score, or a string saying why it could not be judged."""
        scores = np.array([0.0 if isinstance(j, str) else float(j) for j in judgements], np.float32)
        reasons = tuple(j if isinstance(j, str) else None for j in judgements)
        if not np.all(np.isfinite(scores)):
            raise ValueError(f"reward scores must be finite, got {scores}")
        return cls(scores, np.array([r is None for r in reasons], bool), reasons)

    def __len__(self) -> int:
        return len(self.reasons)

    def select(self, rows: slice | Sequence[int]) -> RewardResult:
        """The results of some completions (a slice or indices), in that order."""
        index = np.arange(len(self))[rows]
        return RewardResult(self.scores[index], self.mask[index], tuple(self.reasons[i] for i in index))

    @classmethod
    def concat(cls, results: Sequence[RewardResult]) -> RewardResult:
        """One result of several batches' results, in order."""
        if not results:
            return cls(np.zeros(0, np.float32), np.zeros(0, bool), ())
        return cls(np.concatenate([r.scores for r in results]), np.concatenate([r.mask for r in results]),
                   tuple(reason for r in results for reason in r.reasons))  # fmt: skip

    def masked_counts(self) -> dict[str, int]:
        return dict(Counter(r for r in self.reasons if r is not None))

    def metrics(self, prefix: str) -> dict[str, float]:
        """`{prefix}/mean` over judged completions, `{prefix}/judged` fraction, `{prefix}/masked/{reason}` counts."""
        judged = int(self.mask.sum())
        out = {
            f"{prefix}/mean": float(self.scores[self.mask].mean()) if judged else float("nan"),
            f"{prefix}/judged": judged / max(len(self), 1),
        }
        out.update({f"{prefix}/masked/{reason}": float(n) for reason, n in self.masked_counts().items()})
        return out


class Reward(Protocol):
    def __call__(self, prompts: Sequence[Any], completions: Sequence[str], **fields: Sequence[Any]) -> RewardResult:
        ...


REWARDS: Registry[Callable[..., Reward]] = Registry("reward")


@dataclasses.dataclass(frozen=True)
class LentModel:
    """A frozen model a run lends a model-based reward: its weights as the run loaded them (`train/frozen.py`: on the
    run's mesh, with the trained model's shardings, shared with the train step), the path they came from, and the
    tokenizer to read completions with (a frozen model shares the trained model's vocabulary)."""

    frozen: FrozenModel
    path: str
    tokenizer: Any


# The run's frozen model of a name, lent to a reward; given to `build_rewards` by whoever holds the run's models.
Lender = Callable[[str], LentModel]


def column(fields: Mapping[str, Sequence[Any]], name: str, n: int, reward: str) -> Sequence[Any]:
    """A per-completion field, checked to be present and as long as the batch (a clear error, not a crash later)."""
    if name not in fields:
        raise KeyError(f"reward {reward!r} needs the per-completion field {name!r}; got {sorted(fields)}")
    values = fields[name]
    if len(values) != n:
        raise ValueError(f"reward {reward!r}: field {name!r} has {len(values)} values for {n} completions")
    return values


@dataclasses.dataclass(frozen=True)
class WeightedRewards:
    """Σ weight_i · reward_i per completion. A completion is judged only when every component judged it (a missing
    term would change the scale of the sum); its reason is the first component's reason, as `name:reason`."""

    names: tuple[str, ...]
    rewards: tuple[Reward, ...]
    weights: tuple[float, ...]

    def score(self, prompts, completions, **fields) -> tuple[RewardResult, dict[str, float]]:
        """The combined result and the metrics of every component and of the total (`reward/...`)."""
        total, parts = self.score_parts(prompts, completions, **fields)
        metrics: dict[str, float] = {}
        for name, part in parts.items():
            metrics.update(part.metrics(f"reward/{name}"))
        metrics.update(total.metrics("reward/total"))
        return total, metrics

    def score_parts(self, prompts, completions, **fields) -> tuple[RewardResult, dict[str, RewardResult]]:
        """The combined result and every component's own result, by name."""
        parts = {}
        for name, reward in zip(self.names, self.rewards):
            part = reward(prompts, completions, **fields)
            if len(part) != len(completions):
                raise ValueError(f"reward {name!r} returned {len(part)} results for {len(completions)} completions")
            parts[name] = part
        return self.combine(parts), parts

    def combine(self, parts: Mapping[str, RewardResult]) -> RewardResult:
        """The weighted total of the components' results (`parts[name]` for every name)."""
        n = len(parts[self.names[0]])
        total = np.zeros(n, np.float32)
        reasons: list[str | None] = [None] * n
        for name, weight in zip(self.names, self.weights):
            part = parts[name]
            total += weight * np.where(part.mask, part.scores, 0.0)
            for i, reason in enumerate(part.reasons):
                if reason is not None and reasons[i] is None:
                    reasons[i] = f"{name}:{reason}"
        mask = np.array([r is None for r in reasons], bool)
        return RewardResult(np.where(mask, total, 0.0).astype(np.float32), mask, tuple(reasons))

    def __call__(self, prompts, completions, **fields) -> RewardResult:
        return self.score(prompts, completions, **fields)[0]


def build_reward(spec: Mapping[str, Any], lend: Lender | None = None) -> tuple[str, float, Reward]:
    """(label, weight, reward) from `{"name", "weight" (default 1), "label" (default the name), **options}`.
    `frozen: <name>` asks for the run's frozen model of that name, which `lend` provides (as the reward's `lent`)."""
    options = dict(spec)
    if "name" not in options:
        raise ValueError(f"a reward entry needs a 'name'; got {sorted(options)}")
    name = options.pop("name")
    weight = float(options.pop("weight", 1.0))
    label = options.pop("label", name)
    if "frozen" in options:
        if lend is None:
            raise ValueError(f"reward {name!r}: frozen={options['frozen']!r} names a run's frozen model, and there "
                             f"is no run here; load the model from a path instead (e.g. checkpoint=)")  # fmt: skip
        options["lent"] = lend(options.pop("frozen"))
    try:
        reward = REWARDS.get(name)(**options)
    except TypeError as e:
        raise ValueError(f"reward {name!r}: bad options {sorted(options)}: {e}") from None
    return label, weight, reward


def build_rewards(specs: Sequence[Mapping[str, Any]], lend: Lender | None = None) -> WeightedRewards:
    """The weighted rewards of an experiment's `rewards` list (ConfigDicts or dicts); `lend` gives the run's frozen
    models to the rewards that name one (`frozen: <name>`)."""
    built = [build_reward(s.to_dict() if hasattr(s, "to_dict") else s, lend) for s in specs]
    if not built:
        raise ValueError("no rewards configured")
    labels = [label for label, _, _ in built]
    if len(set(labels)) != len(labels):
        raise ValueError(f"duplicate reward labels {labels}; give repeated rewards distinct 'label's")
    return WeightedRewards(tuple(labels), tuple(r for _, _, r in built), tuple(w for _, w, _ in built))

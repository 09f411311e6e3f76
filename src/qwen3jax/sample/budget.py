"""Thinking budget (TR §4.3): once a row has thought for its budget, force-feed the stop-thinking text.

Per row the decode loop tracks a phase:
  OUTSIDE  --emits <think>-->  THINKING  --emits </think>-->  OUTSIDE
  THINKING with `budget` thinking tokens spent  -->  FORCING: the next tokens are the stop-thinking text, one per
  step, whatever the model would have sampled; after its last token the row is OUTSIDE and answers freely.
The budget counts sampled tokens inside think blocks, excluding the `<think>` and `</think>` tokens themselves, over
the whole request: a think block opened after the budget is spent is closed at once by the same text. A prompt that
ends inside an open think block (its last `<think>` after its last `</think>`) starts THINKING.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import NamedTuple, Protocol

import jax
import jax.numpy as jnp

# SPEC §4, verbatim: the text inserted when the thinking reaches the user's budget.
STOP_THINKING_TEXT = (
    "Considering the limited time by the user, I have to give the solution based on the thinking directly now.\n"
    "</think>.\n\n"
)
THINK_START, THINK_END = "<think>", "</think>"

OUTSIDE, THINKING, FORCING = 0, 1, 2
UNLIMITED = jnp.iinfo(jnp.int32).max  # the budget of rows without one


def configured_budget(thinking_budget: int) -> int | None:
    """A sampling batch source's `batch_source.thinking_budget` setting (-1: none) as `generate` takes it."""
    if thinking_budget < -1:
        raise ValueError(f"batch_source.thinking_budget must be >= 0 thinking tokens, or -1 for none; got "
                         f"{thinking_budget}")  # fmt: skip
    return None if thinking_budget == -1 else thinking_budget


class _Tokenizer(Protocol):
    def encode(self, text: str) -> list[int]: ...

    def token_to_id(self, token: str): ...


@dataclasses.dataclass(frozen=True)
class ThinkingTokens:
    """The ids the budget logic needs: the think tags and the tokenized stop-thinking text (which contains `end_id`)."""

    start_id: int
    end_id: int
    stop_text_ids: tuple[int, ...]

    def __post_init__(self):
        if self.start_id == self.end_id:
            raise ValueError(f"<think> and </think> must be different ids, got {self.start_id} for both")
        if self.end_id not in self.stop_text_ids:
            raise ValueError(f"the stop-thinking ids {self.stop_text_ids} do not contain the </think> id {self.end_id}")

    @classmethod
    def from_tokenizer(cls, tokenizer: _Tokenizer) -> "ThinkingTokens":
        """Ids from a tokenizer whose `<think>` and `</think>` are single special tokens (Qwen3's are)."""
        ids = {}
        for tag in (THINK_START, THINK_END):
            try:
                ids[tag] = tokenizer.token_to_id(tag)
            except KeyError:
                ids[tag] = None
            if ids[tag] is None or list(tokenizer.encode(tag)) != [ids[tag]]:
                raise ValueError(f"the tokenizer has no single special token {tag!r}; cannot track thinking")
        return cls(ids[THINK_START], ids[THINK_END], tuple(tokenizer.encode(STOP_THINKING_TEXT)))

    def prompt_phase(self, prompt: Sequence[int]) -> int:
        """THINKING if the prompt ends inside an open think block, else OUTSIDE."""
        def last(tag: int) -> int:
            return max((i for i, t in enumerate(prompt) if t == tag), default=-1)

        return THINKING if last(self.start_id) > last(self.end_id) else OUTSIDE


class BudgetState(NamedTuple):
    phase: jax.Array  # [R] int32: OUTSIDE | THINKING | FORCING
    spent: jax.Array  # [R] int32: thinking tokens sampled so far
    forced: jax.Array  # [R] int32: stop-text tokens already fed (meaningful while FORCING)


class BudgetTables(NamedTuple):
    """Traced constants of one request; -1 ids (no thinking tokens given) never match a real token."""

    start_id: jax.Array  # [] int32
    end_id: jax.Array  # [] int32
    stop_text: jax.Array  # [Kb] int32, padded
    stop_text_len: jax.Array  # [] int32
    budget: jax.Array  # [R] int32, UNLIMITED where none


def _enforce(state: BudgetState, tables: BudgetTables) -> BudgetState:
    """Switch every THINKING row whose budget is spent to FORCING from the first stop-text token."""
    over = (state.phase == THINKING) & (state.spent >= tables.budget)
    return BudgetState(jnp.where(over, FORCING, state.phase), state.spent, jnp.where(over, 0, state.forced))


def initial_state(phase_R: jax.Array, tables: BudgetTables) -> BudgetState:
    zeros = jnp.zeros_like(phase_R)
    return _enforce(BudgetState(phase_R, zeros, zeros), tables)


def forced_token(state: BudgetState, tables: BudgetTables) -> tuple[jax.Array, jax.Array]:
    """(token [R], is_forced [R]): the stop-text token each FORCING row must emit at this step."""
    index_R = jnp.minimum(state.forced, tables.stop_text.shape[0] - 1)
    return tables.stop_text[index_R], state.phase == FORCING


def advance(state: BudgetState, token_R: jax.Array, active_R: jax.Array, tables: BudgetTables) -> BudgetState:
    """The state after the active rows emitted `token_R` (sampled or forced); finished rows keep theirs."""
    phase, spent, forced = state
    forcing, thinking = phase == FORCING, phase == THINKING
    forced_next = forced + forcing
    closes = thinking & (token_R == tables.end_id)
    new_phase = jnp.select(
        [forcing & (forced_next >= tables.stop_text_len), forcing, closes, thinking, token_R == tables.start_id],
        [OUTSIDE, FORCING, OUTSIDE, THINKING, THINKING],
        OUTSIDE,
    )
    new = _enforce(BudgetState(new_phase, spent + (thinking & ~closes), forced_next), tables)
    return jax.tree.map(lambda n, o: jnp.where(active_R, n, o), new, state)

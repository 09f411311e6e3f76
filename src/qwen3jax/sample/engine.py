"""Batched generation: ONE jitted function prefills left-padded prompts into a preallocated KV cache, copies each
prompt's cache rows for its `n` samples, and decodes in a `lax.while_loop` until every row has stopped.

Compilation is keyed on bucketed shapes only (prompt length, generation length, stop-id and stop-text table sizes,
all rounded up to powers of two) and on which filters are on; prompts, lengths, budgets, seeds, temperature, top-p
and the penalty are traced values. A long RL run therefore compiles a handful of programs, not one per batch, as
long as its batch size (prompts x n, not bucketed) stays the same.

Layout: row b's prompt is right-aligned in the P prompt slots (left padding, segment id 0, never attended to); all
rows write decode step t at slot P - 1 + t with their own RoPE position len_b - 1 + t, which is what `KVCache` is
built for. The prefill stops one token short of the prompt: the loop's first step feeds each prompt's last token and
samples from its logits, so the prefill's logits are unused and XLA drops its LM head (the [B, P, V] logits of a
long prompt never exist).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from qwen3jax.model import KVCache, Qwen3, decode_view
from qwen3jax.parallel import constrain
from qwen3jax.sample import budget as budget_lib
from qwen3jax.sample.budget import BudgetState, BudgetTables, ThinkingTokens
from qwen3jax.sample.result import GenerationResult
from qwen3jax.sample.sampling import Filters, choose, penalize

# Smallest buckets: below these, shapes are padded up (compile once for all short prompts / generations / tables).
MIN_PROMPT_BUCKET = 16
MIN_GENERATION_BUCKET = 16
MIN_TABLE_BUCKET = 8

# (tokens [R] int32, emitted [R] bool) after every decode step; `emitted` is False for rows already finished.
StreamFn = Callable[[np.ndarray, np.ndarray], None]


def bucket(n: int, minimum: int) -> int:
    """The smallest power of two >= max(n, minimum)."""
    return max(minimum, 1 << (max(n, 1) - 1).bit_length())


class _Static(NamedTuple):
    """Everything that changes the compiled program besides array shapes."""

    generation_bucket: int
    n: int
    filters: Filters
    stream: StreamFn | None


class _Knobs(NamedTuple):
    """Per-call traced scalars and tables."""

    max_new_tokens: jax.Array  # [] int32, <= generation_bucket
    temperature: jax.Array  # [] float32
    top_p: jax.Array  # [] float32
    presence_penalty: jax.Array  # [] float32
    stop_ids: jax.Array  # [Ks] int32, padded with -1
    vocab_limit: jax.Array  # [] int32: ids >= it are never generated


class _Loop(NamedTuple):
    step: jax.Array
    cache: KVCache
    token: jax.Array  # [R] next token to feed
    position: jax.Array  # [R] its RoPE position
    done: jax.Array  # [R] bool
    stopped: jax.Array  # [R] bool: finished on a stop id
    length: jax.Array  # [R] int32 tokens generated
    out_tokens: jax.Array  # [R, G]
    out_logprobs: jax.Array  # [R, G]
    out_raw: jax.Array  # [R, G]
    out_forced: jax.Array  # [R, G] bool
    seen: jax.Array | None  # [R, V] bool: generated so far (presence penalty only)
    budget: BudgetState


def _shard_cache(cache: KVCache) -> KVCache:
    """Lay the cache out like the attention activations: rows over the batch axes, KV heads over `tensor`."""
    kv_axes = ("layers", "batch", "act_kv_heads", None, None)
    return cache._replace(
        k=tuple(constrain(k, kv_axes) for k in cache.k),
        v=tuple(constrain(v, kv_axes) for v in cache.v),
        segment_ids=constrain(cache.segment_ids, ("batch", None)),
        positions=constrain(cache.positions, ("batch", None)),
    )


def _repeat_rows(cache: KVCache, n: int) -> KVCache:
    if n == 1:
        return cache
    return cache._replace(
        k=tuple(jnp.repeat(k, n, axis=1) for k in cache.k),  # [L, B, K, S, H]
        v=tuple(jnp.repeat(v, n, axis=1) for v in cache.v),
        segment_ids=jnp.repeat(cache.segment_ids, n, axis=0),
        positions=jnp.repeat(cache.positions, n, axis=0),
    )


def _prefill(model: Qwen3, prompts_BP: jax.Array, lengths_B: jax.Array, cache_len: int) -> KVCache:
    """Cache every prompt token except the last (see module docstring)."""
    b, p = prompts_BP.shape
    segments_BP = (jnp.arange(p)[None, :] >= p - lengths_B[:, None]).astype(jnp.int32)
    positions_BP = jnp.maximum(jnp.cumsum(segments_BP, axis=1) - 1, 0)
    cache = _shard_cache(KVCache.init(model.config, b, cache_len))
    _, cache = model(prompts_BP[:, :-1], positions=positions_BP[:, :-1], segment_ids=segments_BP[:, :-1], cache=cache)
    return cache


@functools.partial(jax.jit, static_argnames=("graphdef", "static"))
def _generate(graphdef, params, prompts_BP, lengths_B, phase_B, knobs: _Knobs, tables: BudgetTables, key, *, static):
    model = nnx.merge(graphdef, params)
    n, g = static.n, static.generation_bucket
    b, p = prompts_BP.shape
    # n samples of a prompt share its prefill: its cache rows are copied, prompt-major.
    cache = _shard_cache(_repeat_rows(_prefill(model, prompts_BP, lengths_B, p + g - 1), n))
    rows = b * n
    tables = tables._replace(budget=jnp.repeat(tables.budget, n))
    step_graphdef, step_params = nnx.split(decode_view(model))
    cache = cache.per_layer()  # the decode view runs its layers unrolled

    def body(s: _Loop) -> _Loop:
        active = ~s.done
        # A module with fresh variables inside the loop's trace: NNX refuses variables made at an outer trace level.
        model = nnx.merge(step_graphdef, jax.tree.map(lambda x: x, step_params))
        segments = active[:, None].astype(jnp.int32)  # finished rows: padding, attended by no real token
        logits_R1V, cache = model(s.token[:, None], positions=s.position[:, None], segment_ids=segments, cache=s.cache)
        logits_RV = logits_R1V[:, 0]
        real_RV = jnp.where(jnp.arange(logits_RV.shape[-1]) < knobs.vocab_limit, logits_RV, -jnp.inf)
        penalized_RV = penalize(real_RV, s.seen, knobs.presence_penalty)
        token, logprob = choose(
            jax.random.fold_in(key, s.step), penalized_RV, static.filters, knobs.temperature, knobs.top_p
        )
        forced_token, forced = budget_lib.forced_token(s.budget, tables)
        token = jnp.where(forced, forced_token, token)
        logprob = jnp.where(forced, 0.0, logprob)
        raw = jnp.take_along_axis(jax.nn.log_softmax(logits_RV, axis=-1), token[:, None], axis=-1)[:, 0]

        def record(out, value):
            return out.at[:, s.step].set(jnp.where(active, value, jnp.zeros_like(value)))

        length = s.length + active
        hit_stop = active & jnp.isin(token, knobs.stop_ids)
        seen = s.seen
        if seen is not None:  # finished rows may mark junk: nothing of theirs is read any more
            seen = seen.at[jnp.arange(rows), token].set(True)
        if static.stream is not None:
            jax.debug.callback(static.stream, token, active, ordered=True)
        return _Loop(
            step=s.step + 1,
            cache=cache,
            token=token,
            position=s.position + 1,
            done=s.done | hit_stop | (length >= knobs.max_new_tokens),
            stopped=s.stopped | hit_stop,
            length=length,
            out_tokens=record(s.out_tokens, token),
            out_logprobs=record(s.out_logprobs, logprob),
            out_raw=record(s.out_raw, raw),
            out_forced=record(s.out_forced, forced),
            seen=seen,
            budget=budget_lib.advance(s.budget, token, active, tables),
        )

    zeros = functools.partial(jnp.zeros, (rows, g))
    start = _Loop(
        step=jnp.zeros((), jnp.int32),
        cache=cache,
        token=jnp.repeat(prompts_BP[:, -1], n),
        position=jnp.repeat(lengths_B - 1, n),
        done=jnp.zeros(rows, bool),
        stopped=jnp.zeros(rows, bool),
        length=jnp.zeros(rows, jnp.int32),
        out_tokens=zeros(jnp.int32),
        out_logprobs=zeros(jnp.float32),
        out_raw=zeros(jnp.float32),
        out_forced=zeros(bool),
        seen=jnp.zeros((rows, model.config.vocab_size), bool) if static.filters.penalty else None,
        budget=budget_lib.initial_state(jnp.repeat(phase_B, n), tables),
    )
    # Early exit: the loop ends as soon as every row is done (each row is done after max_new_tokens at the latest).
    end = jax.lax.while_loop(lambda s: ~jnp.all(s.done), body, start)
    return end.out_tokens, end.out_logprobs, end.out_raw, end.out_forced, end.length, end.stopped


def generate(
    model: Qwen3,
    prompts: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    presence_penalty: float = 0.0,
    n: int = 1,
    stop_ids: Sequence[int] = (),
    thinking_budget: int | None | Sequence[int | None] = None,
    thinking: ThinkingTokens | None = None,
    seed: int = 0,
    stream: StreamFn | None = None,
    vocab_limit: int | None = None,
) -> GenerationResult:
    """Generate up to `max_new_tokens` tokens after each prompt (lists of token ids), `n` samples per prompt.

    temperature 0 is greedy; otherwise tokens are drawn from the distribution `sampling.py` defines (presence
    penalty, temperature, top-k, top-p), reproducibly for a given `seed`. A row stops after emitting any of
    `stop_ids` (kept as its last token) or after `max_new_tokens`.

    thinking_budget: thinking tokens allowed per request, one int for all prompts or one int/None per prompt (None:
      unlimited); needs `thinking` (`ThinkingTokens.from_tokenizer(tokenizer)`), see `budget.py`.
    stream: called after every decode step from inside the compiled loop (`jax.debug.callback`) with that step's
      tokens [B*n] and which rows emitted one; pass the same callable each time to reuse the compiled program.
      Single device only.
    vocab_limit: only ids below it are generated: the tokenizer's size when the model's vocabulary is padded past
      it (Qwen3's 151,936 embedding rows hold 151,669 tokens; the rest are untrained and undecodable). None: every
      id of the model. Raw log-probs stay those of the model over its whole vocabulary.

    A sharded model (`create_model(..., mesh=mesh)` or a loader's `mesh=`) must be called under
    `jax.set_mesh(mesh)`; the KV cache is then laid out like the attention activations.
    """
    args, static = _program_inputs(
        model, prompts, max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
        presence_penalty=presence_penalty, n=n, stop_ids=stop_ids, thinking_budget=thinking_budget, thinking=thinking,
        seed=seed, stream=stream, vocab_limit=vocab_limit,
    )  # fmt: skip
    out = _generate(*args, static=static)
    tokens, logprobs, raw, forced, lengths, stopped = jax.device_get(out)
    lengths = [int(x) for x in lengths]
    return GenerationResult(
        tokens=[row[:k].tolist() for row, k in zip(tokens, lengths)],
        logprobs=[row[:k] for row, k in zip(logprobs, lengths)],
        raw_logprobs=[row[:k] for row, k in zip(raw, lengths)],
        forced=[row[:k] for row, k in zip(forced, lengths)],
        finish_reason=["stop" if s else "length" for s in stopped],
        lengths=lengths,
    )


def _program_inputs(
    model: Qwen3, prompts, *, max_new_tokens, temperature, top_k, top_p, presence_penalty, n, stop_ids,
    thinking_budget, thinking, seed, stream, vocab_limit,
) -> tuple[tuple, _Static]:
    """The checked arguments of the compiled generation program for `generate`'s arguments."""
    cfg = model.config
    prompts = _check_prompts(prompts, cfg.vocab_size)
    _check_positive("max_new_tokens", max_new_tokens)
    _check_positive("n", n)
    if not _is_int(seed):
        raise ValueError(f"seed must be an int, got {seed!r}")
    filters = _filters(temperature, top_k, top_p, presence_penalty, cfg.vocab_size)
    if vocab_limit is not None and not (_is_int(vocab_limit) and 1 <= vocab_limit <= cfg.vocab_size):
        raise ValueError(f"vocab_limit must be None or an int in [1, {cfg.vocab_size}], got {vocab_limit!r}")
    if stream is not None and jax.sharding.get_abstract_mesh().size > 1:
        raise ValueError("stream needs a single-device model: JAX cannot order host callbacks across devices")
    longest = max(len(p) for p in prompts)
    if longest + max_new_tokens > cfg.max_position_embeddings:
        raise ValueError(
            f"the longest prompt ({longest} tokens) plus max_new_tokens={max_new_tokens} exceeds the model's "
            f"max_position_embeddings={cfg.max_position_embeddings}"
        )
    prompt_bucket = bucket(longest, MIN_PROMPT_BUCKET)
    prompts_BP = np.zeros((len(prompts), prompt_bucket), np.int32)
    for row, prompt in zip(prompts_BP, prompts):
        row[prompt_bucket - len(prompt) :] = prompt
    stop = _check_ids("stop_ids", stop_ids, cfg.vocab_size)
    knobs = _Knobs(
        max_new_tokens=np.int32(max_new_tokens),
        temperature=np.float32(temperature),
        top_p=np.float32(1.0 if top_p is None else top_p),
        presence_penalty=np.float32(presence_penalty),
        stop_ids=_padded(stop, MIN_TABLE_BUCKET),
        vocab_limit=np.int32(cfg.vocab_size if vocab_limit is None else vocab_limit),
    )
    tables, phase = _budget_tables(thinking_budget, thinking, prompts, cfg.vocab_size)
    graphdef, params = nnx.split(model)
    static = _Static(bucket(max_new_tokens, MIN_GENERATION_BUCKET), n, filters, stream)
    return (
        graphdef, params, prompts_BP, np.array([len(p) for p in prompts], np.int32), phase, knobs, tables,
        jax.random.key(seed),
    ), static


_GENERATE_DEFAULTS = {
    name: p.default for name, p in inspect.signature(generate).parameters.items() if p.default is not p.empty
}


def generation_memory(model: Qwen3, prompts: Sequence[Sequence[int]], **settings) -> dict[str, int]:
    """Bytes of the compiled generation program `generate(model, prompts, **settings)` runs (XLA's memory
    analysis): its arguments (the weights, read in place), its temporaries (the KV cache, the decode view's
    re-laid-out weight copies, activations) and its outputs. Compiles, runs nothing."""
    args, static = _program_inputs(model, prompts, **{**_GENERATE_DEFAULTS, **settings})
    stats = _generate.lower(*args, static=static).compile().memory_analysis()
    return {"argument_bytes": int(stats.argument_size_in_bytes), "temp_bytes": int(stats.temp_size_in_bytes),
            "output_bytes": int(stats.output_size_in_bytes)}  # fmt: skip


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _check_positive(name: str, value) -> None:
    if not _is_int(value) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def _check_ids(what: str, ids, vocab_size: int) -> list[int]:
    ids = list(ids)
    bad = [t for t in ids if not _is_int(t) or not 0 <= t < vocab_size]
    if bad:
        raise ValueError(f"{what}: {bad[:5]} are not token ids in [0, {vocab_size})")
    return [int(t) for t in ids]


def _check_prompts(prompts, vocab_size: int) -> list[list[int]]:
    if isinstance(prompts, (str, bytes)) or not isinstance(prompts, (Sequence, np.ndarray)) or len(prompts) == 0:
        raise ValueError("prompts must be a non-empty list of token-id lists")
    checked = []
    for i, prompt in enumerate(prompts):
        if isinstance(prompt, (str, bytes)) or not isinstance(prompt, (Sequence, np.ndarray)) or len(prompt) == 0:
            raise ValueError(f"prompt {i} must be a non-empty list of token ids, got {type(prompt).__name__}")
        checked.append(_check_ids(f"prompt {i}", prompt, vocab_size))
    return checked


def _filters(temperature, top_k, top_p, presence_penalty, vocab_size: int) -> Filters:
    """Validate the sampling parameters and reduce them to the static code path (no-op filters are dropped)."""
    if not np.isfinite(temperature) or temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0: greedy), got {temperature!r}")
    if top_k is not None and (not _is_int(top_k) or top_k < 1):
        raise ValueError(f"top_k must be None or a positive int, got {top_k!r}")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"top_p must be None or in (0, 1], got {top_p!r}")
    if not np.isfinite(presence_penalty):
        raise ValueError(f"presence_penalty must be finite, got {presence_penalty!r}")
    greedy = temperature == 0
    return Filters(
        greedy=greedy,
        top_k=None if greedy or top_k is None or top_k >= vocab_size else int(top_k),
        top_p=not greedy and top_p is not None and top_p < 1,
        penalty=presence_penalty != 0,
    )


def _padded(ids: Sequence[int], minimum: int) -> np.ndarray:
    table = np.full(bucket(len(ids), minimum), -1, np.int32)
    table[: len(ids)] = ids
    return table


def _budget_tables(
    thinking_budget, thinking: ThinkingTokens | None, prompts: list[list[int]], vocab_size: int
) -> tuple[BudgetTables, np.ndarray]:
    """Per-prompt budgets and start phases, and the thinking ids (all -1, i.e. inert, without `thinking`)."""
    b = len(prompts)
    if thinking_budget is None or _is_int(thinking_budget):
        budgets = [thinking_budget] * b
    elif isinstance(thinking_budget, Sequence) and not isinstance(thinking_budget, (str, bytes)):
        budgets = list(thinking_budget)
        if len(budgets) != b:
            raise ValueError(f"thinking_budget has {len(budgets)} entries for {b} prompts")
    else:
        raise ValueError(f"thinking_budget must be None, an int >= 0 or one per prompt, got {thinking_budget!r}")
    for i, x in enumerate(budgets):
        if x is not None and (not _is_int(x) or x < 0):
            raise ValueError(f"thinking_budget[{i}] must be None or an int >= 0, got {x!r}")
    if thinking is None:
        if any(x is not None for x in budgets):
            raise ValueError("thinking_budget needs `thinking=ThinkingTokens.from_tokenizer(tokenizer)`")
        start = end = -1
        stop_text: list[int] = []
        phase = np.full(b, budget_lib.OUTSIDE, np.int32)
    else:
        start, end = _check_ids("thinking ids", [thinking.start_id, thinking.end_id], vocab_size)
        stop_text = _check_ids("stop-thinking text ids", thinking.stop_text_ids, vocab_size)
        phase = np.array([thinking.prompt_phase(p) for p in prompts], np.int32)
    tables = BudgetTables(
        start_id=np.int32(start),
        end_id=np.int32(end),
        stop_text=_padded(stop_text, MIN_TABLE_BUCKET),
        stop_text_len=np.int32(len(stop_text)),
        budget=np.array([budget_lib.UNLIMITED if x is None else x for x in budgets], np.int32),
    )
    return tables, phase

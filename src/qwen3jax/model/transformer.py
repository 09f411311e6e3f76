"""The Qwen3 decoder: embeddings → stacks of decoder layers (scanned over depth, optionally rematerialised) →
final RMSNorm → LM head, returning float32 logits (or the final hidden states, for a loss that applies the head
itself in vocabulary slices: `model(..., head=False)` then `model.head(hidden, vocab_slices)`).

Routing statistics of MoE layers (for the load-balancing loss) come from `model(..., return_stats=True)`, which
returns `(logits, RoutingStats)` with fields stacked over MoE layers in depth order: `expert_counts [L_moe, E]`,
`router_prob_sums [L_moe, E]`, `num_tokens [L_moe]`, summed over the real (segment id > 0) tokens of the batch, and
`dropped_slots [L_moe]` (see model/expert_parallel.py).
Dense models return empty `[0, 0]` statistics.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from qwen3jax.model import dca
from qwen3jax.model.attention import Attention, KVCache, attention_mask
from qwen3jax.model.config import ModelConfig
from qwen3jax.model.context_parallel import balanced_inputs, context_axis_size, from_balanced
from qwen3jax.model.layers import MLP, OutputMajor, RMSNorm, param, project, rope_cos_sin, rope_frequencies
from qwen3jax.model.moe import MoE, RoutingStats
from qwen3jax.model.splash import SegmentMask, resolve_kernel, target_platform
from qwen3jax.parallel.rules import constrain

# Activation checkpointing policies per decoder layer (what the backward pass may keep instead of recomputing).
REMAT_POLICIES = {
    "full": jax.checkpoint_policies.nothing_saveable,  # recompute the whole layer: least memory
    "dots": jax.checkpoint_policies.checkpoint_dots,  # keep every matmul output
    "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,  # keep projections, not attention
}


class DecoderLayer(nnx.Module):
    """Pre-norm block: `h = x + Attn(norm(x))`, `y = h + MLP_or_MoE(norm(h))`."""

    def __init__(self, cfg: ModelConfig, is_moe: bool, *, rngs: nnx.Rngs):
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg)
        self.self_attn = Attention(cfg, rngs=rngs)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg)
        self.mlp = MoE(cfg, rngs=rngs) if is_moe else MLP(cfg, rngs=rngs)
        self.is_moe = is_moe

    def __call__(self, x_BTD, rope, mask_BTS, token_mask_BT, kv_cache=None, cache_index=None):
        attn_out, kv_cache = self.self_attn(self.input_layernorm(x_BTD), rope, mask_BTS, kv_cache, cache_index)
        h_BTD = constrain(x_BTD + attn_out, ("batch", "seq", "act_embed"))
        if self.is_moe:
            mlp_out, stats = self.mlp(self.post_attention_layernorm(h_BTD), token_mask_BT)
        else:
            mlp_out, stats = self.mlp(self.post_attention_layernorm(h_BTD)), None
        return constrain(h_BTD + mlp_out, ("batch", "seq", "act_embed")), (stats, kv_cache)


class LayerStack(nnx.Module):
    """`count` same-kind decoder layers with parameters stacked on a leading `layers` axis."""

    def __init__(self, cfg: ModelConfig, is_moe: bool, count: int, *, rngs: nnx.Rngs):
        @nnx.split_rngs(splits=count)
        @nnx.vmap(in_axes=0, out_axes=0, transform_metadata={nnx.PARTITION_NAME: "layers", "axes": "layers"})
        def create(rngs):
            return DecoderLayer(cfg, is_moe, rngs=rngs)

        self.layers = create(rngs)
        self.count = count
        self.is_moe = is_moe
        self.remat = cfg.remat
        self.scan_layers = cfg.scan_layers

    def __call__(self, x_BTD, rope, mask_BTS, token_mask_BT, kv_cache=None, cache_index=None):
        """Returns (x, (routing stats stacked per layer or None, updated (k, v) cache or None)).

        The group's KV cache (`kv_cache=(k, v)`, stacked or per-layer, see `KVCache`) travels in the loop carry
        with a layer counter: each layer writes only its new slots, instead of the scan re-emitting the whole cache
        as a per-layer output."""
        unrolled = isinstance(self.layers, nnx.List) or not self.scan_layers
        if kv_cache is not None and isinstance(kv_cache[0], tuple) and not unrolled:
            raise ValueError("a per-layer KV cache (KVCache.per_layer) needs unrolled layers, e.g. a decode_view")

        def run_layer(carry, layer):
            x, kv = carry
            x, (stats, kv) = layer(x, rope, mask_BTS, token_mask_BT, kv, cache_index)
            if kv is not None:
                kv = (kv[0], kv[1], kv[2] + 1)
            return (x, kv), stats

        if self.remat != "none" and kv_cache is None:  # remat only matters for gradients, not for decoding
            run_layer = nnx.remat(run_layer, policy=REMAT_POLICIES[self.remat], prevent_cse=not self.scan_layers)
        # The counter stays a Python int when unrolled, so per-layer caches are indexed statically.
        counter = 0 if unrolled else jnp.zeros((), jnp.int32)
        carry = (x_BTD, None if kv_cache is None else (*kv_cache, counter))

        if unrolled:  # compile time grows with depth
            per_layer = []
            for layer in self._per_layer():
                carry, stats = run_layer(carry, layer)
                per_layer.append(stats)
            (x_BTD, kv), stats = carry, jax.tree.map(lambda *s: jnp.stack(s), *per_layer)
        else:
            scanned = nnx.scan(run_layer, in_axes=(nnx.Carry, 0), out_axes=(nnx.Carry, 0), length=self.count)
            (x_BTD, kv), stats = scanned(carry, self.layers)
        return x_BTD, (stats, None if kv is None else kv[:2])

    def _per_layer(self) -> list[DecoderLayer]:
        """One module per layer: the unstacked ones (see `decode_view`), or slices of the stacked parameters."""
        if isinstance(self.layers, nnx.List):
            return list(self.layers)
        graphdef, state = nnx.split(self.layers)
        return [nnx.merge(graphdef, jax.tree.map(lambda a: a[i], state)) for i in range(self.count)]


def decode_view(model: "Qwen3") -> "Qwen3":
    """The same model laid out for many calls inside one compiled loop, i.e. decoding: every layer stack holds one
    module per layer, and the projection weights (attention, dense MLP, untied LM head) are `OutputMajor` copies.
    Call it inside the jitted function, before the loop, so that its slices and transposes are made once per call
    rather than once per step.

    Why (XLA:CPU): a layer's slice of a stacked weight is a copy, and XLA does not hoist those copies out of a while
    loop, so a scanned or unrolled stack re-copies every weight on every decode step; and skinny products stream an
    output-major weight faster, read weight-first by `project` (see `layers.FEW_ROWS`). The view is for running
    only: its parameters keep the stacked `layers` sharding metadata and hold transposed copies, so do not save,
    shard or train it.
    """
    graphdef, state = nnx.split(model)
    view = nnx.merge(graphdef, state)
    for stack in view.stacks:
        stack.layers = nnx.List(stack._per_layer())
        for layer in stack.layers:
            _make_output_major(layer.self_attn, {"q_proj": 1, "k_proj": 1, "v_proj": 1, "o_proj": 2})
            if not layer.is_moe:  # expert weights go through the dispatch kernels, not `project`
                _make_output_major(layer.mlp, {"gate_proj": 1, "up_proj": 1, "down_proj": 1})
    if not model.config.tie_word_embeddings:  # a tied head is the embedding table, already [vocab, embed]
        _make_output_major(view, {"lm_head": 1})
    return view


def _make_output_major(module: nnx.Module, num_inputs: dict[str, int]) -> None:
    """Replace the named weights (each one read through `project`, with that many leading input axes) by
    `OutputMajor` copies."""
    for name, n in num_inputs.items():
        weight = getattr(module, name)[...]
        # The barrier makes XLA materialise the transposed copy; otherwise it folds the transpose into the matmul,
        # which then reads the original layout again.
        order = [*range(n, weight.ndim), *range(n)]
        setattr(module, name, OutputMajor(jax.lax.optimization_barrier(weight.transpose(order))))


def positions_from_segments(segment_ids_BT: jax.Array) -> jax.Array:
    """Positions that restart at 0 at every document start (a change of segment id)."""
    idx = jnp.broadcast_to(jnp.arange(segment_ids_BT.shape[1]), segment_ids_BT.shape)
    starts = jnp.concatenate(
        [jnp.ones_like(segment_ids_BT[:, :1], bool), segment_ids_BT[:, 1:] != segment_ids_BT[:, :-1]], axis=1
    )
    return idx - jax.lax.cummax(jnp.where(starts, idx, 0), axis=1)


class Qwen3(nnx.Module):
    """Qwen3 causal LM (dense or MoE). `model(tokens)` → float32 logits [batch, seq, vocab].

    Args of `__call__`:
      tokens: int [B, T].
      positions: int [B, T] RoPE positions; default: restart at 0 per document of `segment_ids`.
      segment_ids: int [B, T] document ids for packed rows; tokens attend only within their document; 0 = padding
        (padding is excluded from MoE routing statistics). Default: one document per row.
      cache: a `KVCache` to decode with: the tokens are written at `cache.index` and attend to everything cached
        before them (their own document only); `positions` are then required. Returns `(logits, new_cache)`.
      return_stats: also return the MoE `RoutingStats` (see module docstring), as the last element.
      head: False returns the final (normed) hidden states [B, T, D] in place of the logits, for a loss that applies
        the LM head itself in vocabulary slices (`head`).
    """

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        self.config = cfg
        self.embed_tokens = param(rngs, (cfg.vocab_size, cfg.hidden_size), ("vocab", "embed"), cfg)
        self.stacks = nnx.List(
            [LayerStack(cfg, is_moe, count, rngs=rngs) for is_moe, count in cfg.layer_groups()]
        )
        self.norm = RMSNorm(cfg.hidden_size, cfg)
        if not cfg.tie_word_embeddings:
            self.lm_head = param(rngs, (cfg.hidden_size, cfg.vocab_size), ("embed", "vocab"), cfg)

    def __call__(self, tokens, positions=None, segment_ids=None, *, cache: KVCache | None = None,
                 return_stats: bool = False, head: bool = True):
        cfg = self.config
        dt = jnp.dtype(cfg.dtype)
        if segment_ids is None:
            segment_ids = jnp.ones(tokens.shape, jnp.int32)
        if positions is None:
            if cache is not None:
                raise ValueError("decoding with a KV cache needs explicit per-row positions")
            positions = positions_from_segments(segment_ids)
        # Context parallelism (model/context_parallel.py): the per-token inputs go into the load-balanced layout,
        # attention gets segment ids and original indices instead of a [B, T, T] mask, the output comes back.
        cp = context_axis_size() if cache is None else 1
        if cp > 1:
            if cfg.dual_chunk is not None:
                raise ValueError("Dual Chunk Attention is an inference setting and does not combine with context "
                                 "parallelism (mesh.context > 1)")  # fmt: skip
            tokens, positions, segment_ids, mask_BTS = balanced_inputs(tokens, positions, segment_ids, cp)
            stack_caches = [None] * len(self.stacks)
        elif cache is None and resolve_kernel(cfg.attention_kernel, target_platform()) == "splash":
            mask_BTS = SegmentMask(segment_ids)
            stack_caches = [None] * len(self.stacks)
        elif cache is None:
            kv_positions = positions
            mask_BTS = attention_mask(segment_ids, segment_ids)
            stack_caches = [None] * len(self.stacks)
        else:
            kv_segments = jax.lax.dynamic_update_slice(cache.segment_ids, segment_ids.astype(jnp.int32), (0, cache.index))
            kv_positions = jax.lax.dynamic_update_slice(cache.positions, positions.astype(jnp.int32), (0, cache.index))
            mask_BTS = attention_mask(segment_ids, kv_segments, cache.index)
            stack_caches = list(zip(cache.k, cache.v))
        inv_freq, rope_scale = rope_frequencies(cfg)
        if cfg.dual_chunk is None:
            rope = rope_cos_sin(positions, inv_freq, rope_scale)
        else:  # Dual Chunk Attention (model/dca.py): chunked positions, and each key's chunk relation in the mask
            rope = dca.dual_chunk_rope(cfg.dual_chunk, positions, inv_freq, rope_scale)
            mask_BTS = dca.visibility(cfg.dual_chunk, mask_BTS, positions, kv_positions)
        token_mask_BT = segment_ids > 0

        x_BTD = constrain(jnp.take(self.embed_tokens[...], tokens, axis=0).astype(dt), ("batch", "seq", "act_embed"))
        moe_stats, new_kv = [], []
        for stack, kv in zip(self.stacks, stack_caches):
            x_BTD, (stats, kv) = stack(x_BTD, rope, mask_BTS, token_mask_BT, kv, None if cache is None else cache.index)
            new_kv.append(kv)
            if stats is not None:
                moe_stats.append(stats)
        if cp > 1:
            x_BTD = constrain(from_balanced(x_BTD, cp), ("batch", "seq", "act_embed"))
        x_BTD = self.norm(x_BTD)
        outputs = [self.head(x_BTD)[0] if head else x_BTD]
        if cache is not None:
            outputs.append(
                KVCache(
                    k=tuple(k for k, _ in new_kv),
                    v=tuple(v for _, v in new_kv),
                    segment_ids=kv_segments,
                    positions=kv_positions,
                    index=cache.index + tokens.shape[1],
                )
            )
        if return_stats:
            if moe_stats:
                stats = jax.tree.map(lambda *s: jnp.concatenate(s), *moe_stats)
            else:
                empty = jnp.zeros((0, 0), jnp.float32)
                stats = RoutingStats(empty, empty, jnp.zeros((0,), jnp.float32), jnp.zeros((0,), jnp.float32))
            outputs.append(stats)
        return outputs[0] if len(outputs) == 1 else tuple(outputs)

    def head(self, x_BTD: jax.Array, vocab_slices: int = 1) -> list[jax.Array]:
        """float32 logits of final hidden states (`model(..., head=False)`) as `vocab_slices` consecutive
        vocabulary slices [B, T, V_i] (sizes as `numpy.array_split`), one matmul each.

        A loss that reduces each slice on its own (`losses.token_cross_entropy`) then never forms the [B, T, V]
        logits as one array, which on XLA:CPU means narrower GEMMs and no pass over the whole [B, T, V] fp32 array;
        the gradient of the split is a concatenation.
        """
        if not 1 <= vocab_slices <= self.config.vocab_size:
            raise ValueError(f"vocab_slices must be in [1, vocab_size={self.config.vocab_size}], got {vocab_slices}")
        dt = jnp.dtype(self.config.dtype)
        if self.config.tie_word_embeddings:
            weight, spec = self.embed_tokens, "BTD,VD->BTV"
        else:
            weight, spec = self.lm_head, "BTD,DV->BTV"
        output_major = isinstance(weight, OutputMajor)  # a decode view's head: [V, D]
        vocab_axis = 0 if self.config.tie_word_embeddings or output_major else 1
        slices = [weight]
        if vocab_slices > 1:
            slices = jnp.array_split(weight[...], vocab_slices, axis=vocab_axis)
            slices = [OutputMajor(w) if output_major else w for w in slices]
        return [
            constrain(project(spec, x_BTD, w, dt, preferred_element_type=jnp.float32), ("batch", "seq", "act_vocab"))
            for w in slices
        ]

"""Where each parameter of our model lives in a Hugging Face Qwen3 checkpoint, and how the axes map.

One table serves both directions (load and export), so they cannot disagree.

A parameter ("leaf") is an array `[lead..., block...]`: `lead` is the stacked `(layers,)` or `(layers, experts)`
axes, and each block is one HF tensor rearranged. An HF weight is a 2-D `[rows, cols]` matrix (torch Linear
weights are `[out, in]`) whose rows factor into `row_dims` and columns into `col_dims` (1-D norm weights have no
columns); the block is `row_dims + col_dims`, or `col_dims + row_dims` when `transpose` (our einsum weights are
`[in, out]`). Example: `q_proj.weight` `[N*H, D]` has row_dims (N, H), col_dims (D,) and becomes a `[D, N, H]` block.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable, Collection, Iterator

from qwen3jax.model import ModelConfig


@dataclasses.dataclass(frozen=True)
class Slab:
    """One HF matrix: tensor `key`, or the sub-matrix `key[index][row_offset:]` of a fused tensor."""

    key: str
    index: tuple[int, ...] = ()
    row_offset: int = 0


@dataclasses.dataclass(frozen=True)
class Leaf:
    path: tuple[str | int, ...]  # NNX state path, e.g. ("stacks", 0, "layers", "self_attn", "q_proj")
    lead: tuple[int, ...]
    row_dims: tuple[int, ...]
    col_dims: tuple[int, ...]
    transpose: bool
    slab: Callable[..., Slab]  # lead indices → the HF matrix holding that block

    @property
    def block_shape(self) -> tuple[int, ...]:
        return self.col_dims + self.row_dims if self.transpose else self.row_dims + self.col_dims

    @property
    def shape(self) -> tuple[int, ...]:
        return self.lead + self.block_shape

    @property
    def hf_shape(self) -> tuple[int, ...]:
        """Shape of one unfused HF tensor holding a block."""
        return (math.prod(self.row_dims),) + ((math.prod(self.col_dims),) if self.col_dims else ())

    def lead_indices(self) -> Iterator[tuple[int, ...]]:
        return itertools.product(*(range(n) for n in self.lead))


@dataclasses.dataclass(frozen=True)
class Layout:
    leaves: list[Leaf]
    expected: dict[str, tuple[int, ...]]  # every HF tensor the checkpoint must hold → its shape


def hf_layout(cfg: ModelConfig, fused_layers: Collection[int] = ()) -> Layout:
    """The layout of `cfg`; MoE layers listed in `fused_layers` store experts fused (`experts.gate_up_proj` [E, 2F, D]
    with gate rows first, `experts.down_proj` [E, D, F]) instead of per-expert tensors."""
    d, v, n, k, h = cfg.hidden_size, cfg.vocab_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    leaves: list[Leaf] = []
    expected: dict[str, tuple[int, ...]] = {}

    def add(path, lead, row_dims, col_dims, transpose, slab):
        leaf = Leaf(tuple(path), tuple(lead), tuple(row_dims), tuple(col_dims), transpose, slab)
        leaves.append(leaf)
        for idx in leaf.lead_indices():
            s = slab(*idx)
            if not s.index:  # fused tensors are registered with their full shape below
                expected[s.key] = leaf.hf_shape

    add(["embed_tokens"], (), [v], [d], False, lambda: Slab("model.embed_tokens.weight"))
    if not cfg.tie_word_embeddings:
        add(["lm_head"], (), [v], [d], True, lambda: Slab("lm_head.weight"))
    add(["norm", "weight"], (), [d], [], False, lambda: Slab("model.norm.weight"))

    start = 0
    for g, (is_moe, count) in enumerate(cfg.layer_groups()):
        prefix = ["stacks", g, "layers"]

        def per_layer(path, hf_name, row_dims, col_dims, transpose, start=start, count=count, prefix=prefix):
            add(prefix + path, (count,), row_dims, col_dims, transpose,
                lambda l: Slab(f"model.layers.{start + l}.{hf_name}"))

        per_layer(["input_layernorm", "weight"], "input_layernorm.weight", [d], [], False)
        per_layer(["post_attention_layernorm", "weight"], "post_attention_layernorm.weight", [d], [], False)
        per_layer(["self_attn", "q_proj"], "self_attn.q_proj.weight", [n, h], [d], True)
        per_layer(["self_attn", "k_proj"], "self_attn.k_proj.weight", [k, h], [d], True)
        per_layer(["self_attn", "v_proj"], "self_attn.v_proj.weight", [k, h], [d], True)
        per_layer(["self_attn", "o_proj"], "self_attn.o_proj.weight", [d], [n, h], True)
        per_layer(["self_attn", "q_norm", "weight"], "self_attn.q_norm.weight", [h], [], False)
        per_layer(["self_attn", "k_norm", "weight"], "self_attn.k_norm.weight", [h], [], False)
        if not is_moe:
            f = cfg.intermediate_size
            per_layer(["mlp", "gate_proj"], "mlp.gate_proj.weight", [f], [d], True)
            per_layer(["mlp", "up_proj"], "mlp.up_proj.weight", [f], [d], True)
            per_layer(["mlp", "down_proj"], "mlp.down_proj.weight", [d], [f], True)
        else:
            e, f = cfg.num_experts, cfg.moe_intermediate_size
            per_layer(["mlp", "router"], "mlp.gate.weight", [e], [d], True)

            def expert(proj, row_offset, start=start):
                fused_name = "gate_up_proj" if proj in ("gate_proj", "up_proj") else proj

                def slab(l, x):
                    layer = f"model.layers.{start + l}.mlp.experts"
                    if start + l in fused_layers:
                        return Slab(f"{layer}.{fused_name}", (x,), row_offset)
                    return Slab(f"{layer}.{x}.{proj}.weight")

                return slab

            lead = (count, e)
            add(prefix + ["mlp", "gate_proj"], lead, [f], [d], True, expert("gate_proj", 0))
            add(prefix + ["mlp", "up_proj"], lead, [f], [d], True, expert("up_proj", f))
            add(prefix + ["mlp", "down_proj"], lead, [d], [f], True, expert("down_proj", 0))
            for i in range(start, start + count):
                if i in fused_layers:
                    expected[f"model.layers.{i}.mlp.experts.gate_up_proj"] = (e, 2 * f, d)
                    expected[f"model.layers.{i}.mlp.experts.down_proj"] = (e, d, f)
        start += count
    return Layout(leaves, expected)
